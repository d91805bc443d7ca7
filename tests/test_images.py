"""Image datasets, DCGAN networks, the image training recipe and the CLI path from data to refined image grids."""

from __future__ import annotations

import gzip
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import refine
from refine.cli import app
from refine.data.images import ImageBatches, extract_zip, is_image_spec, load_images, parse_data_spec, read_idx
from refine.errors import ConfigError, DataError
from refine.nets import build

SHARED = Path(os.environ.get("REFINE_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
MNIST = SHARED / "data" / "mnist"
CIFAR_ZIP = SHARED / "data" / "cifar10" / "cifar10_jpg_q75_YoongiKim.zip"
runner = CliRunner()


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny networks run fastest on one thread (and do not fight other work for the cores)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# --------------------------------------------------------------------------- synthetic data on disk
def _idx_bytes(arr: np.ndarray) -> bytes:
    code = {np.dtype(np.uint8): 0x08}[arr.dtype]
    head = bytes([0, 0, code, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return head + arr.tobytes()


def _digits(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` 28x28 uint8 images: label k draws a bright bar at a place that depends on k."""
    g = np.random.default_rng(seed)
    labels = (np.arange(n) % 10).astype(np.uint8)
    images = g.integers(0, 30, size=(n, 28, 28)).astype(np.uint8)
    for i, k in enumerate(labels):
        images[i, 2 + 2 * k : 5 + 2 * k, 4:24] = 255
    return images, labels


def write_mnist(root: Path, *, n_train: int = 64, n_test: int = 32, layout: str = "flat-gz") -> Path:
    """Fake MNIST files: ``flat-gz`` (the files as distributed, in ROOT) or ``torchvision`` (ROOT/MNIST/raw, uncompressed)."""
    folder = root / "MNIST" / "raw" if layout == "torchvision" else root
    folder.mkdir(parents=True, exist_ok=True)
    for split, n, seed in (("train", n_train, 0), ("t10k", n_test, 1)):
        images, labels = _digits(n, seed)
        for kind, arr in (("images-idx3", images), ("labels-idx1", labels)):
            name = f"{split}-{kind}-ubyte"
            if layout == "torchvision":
                (folder / name).write_bytes(_idx_bytes(arr))
            else:
                with gzip.open(folder / (name + ".gz"), "wb") as f:
                    f.write(_idx_bytes(arr))
    return root


def _png(path: Path, value: int, size: int = 8, mode: str = "RGB") -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.full((size, size, 3) if mode == "RGB" else (size, size), value, dtype=np.uint8)
    Image.fromarray(arr, mode=mode).save(path)


# --------------------------------------------------------------------------- specs and datasets
def test_parse_data_spec():
    assert parse_data_spec("mnist:/data/m").name == "mnist"
    assert parse_data_spec("FashionMNIST:/x").name == "fashion-mnist"
    assert is_image_spec("cifar10-jpg:/x") and not is_image_spec("grid25") and not is_image_spec("nope:/x")
    for bad, err in (("mnist", ConfigError), ("svhn:/x", ConfigError), ("mnist:", ConfigError)):
        with pytest.raises(err):
            parse_data_spec(bad)


@pytest.mark.parametrize("layout", ["flat-gz", "torchvision"])
def test_mnist_both_layouts(tmp_path, layout):
    root = write_mnist(tmp_path, layout=layout)
    train = load_images(f"mnist:{root}")
    test = load_images(f"mnist:{root}", split="test")
    assert train.images.shape == (64, 1, 28, 28) and train.images.dtype == torch.uint8 and len(test) == 32
    assert train.info["reader"] == ("torchvision" if layout == "torchvision" else "idx")
    images, labels = _digits(64, 0)
    assert torch.equal(train.images[:, 0], torch.from_numpy(images)) and torch.equal(
        train.labels, torch.from_numpy(labels).long()
    )
    x = train.float([0, 1])
    assert x.min() >= -1 and x.max() <= 1 and x.dtype == torch.float32


def test_conversion_limit_and_batches(tmp_path):
    root = write_mnist(tmp_path)
    d = load_images(f"mnist:{root}", image_size=32, channels=3, limit=20, rng=torch.Generator().manual_seed(0))
    assert d.images.shape == (20, 3, 32, 32) and len(d.labels) == 20
    batches = ImageBatches(d, 8, rng=torch.Generator().manual_seed(1))
    got = list(batches)
    assert len(got) == len(batches) == 2 and got[0].shape == (8, 3, 32, 32)


def test_dataset_errors_are_clear(tmp_path):
    with pytest.raises(DataError, match="is not a folder"):
        load_images(f"mnist:{tmp_path / 'missing'}")
    with pytest.raises(DataError, match="train-images-idx3-ubyte"):
        load_images(f"mnist:{tmp_path}")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "train-images-idx3-ubyte").write_bytes(b"not an idx file at all")
    (bad / "train-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x05abc")
    with pytest.raises(DataError, match="magic number"):
        load_images(f"mnist:{bad}")
    with pytest.raises(DataError, match="truncated"):
        read_idx(bad / "train-labels-idx1-ubyte")
    with pytest.raises(DataError, match="cifar-10-batches-py"):
        load_images(f"cifar10:{tmp_path}")
    with pytest.raises(DataError, match="no test split|has no train/ and test/"):
        (tmp_path / "flat").mkdir()
        _png(tmp_path / "flat" / "a.png", 10)
        load_images(f"folder:{tmp_path / 'flat'}", split="test")
    with pytest.raises(ConfigError):
        load_images(f"mnist:{tmp_path}", split="valid")


def test_image_folder_labelled_unlabelled_and_sizes(tmp_path):
    for c, v in (("cat", 10), ("dog", 200)):
        for i in range(3):
            _png(tmp_path / "tree" / c / f"{i}.png", v)
    d = load_images(f"folder:{tmp_path / 'tree'}")
    assert d.images.shape == (6, 3, 8, 8) and d.classes == ["cat", "dog"] and d.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert int(d.images[3].float().mean()) == 200
    _png(tmp_path / "flat" / "a.png", 5, mode="L")
    _png(tmp_path / "flat" / "b.png", 9, mode="L")
    u = load_images(f"folder:{tmp_path / 'flat'}")
    assert u.labels is None and u.images.shape == (2, 1, 8, 8)
    _png(tmp_path / "mixed" / "a" / "x.png", 1, size=8)
    _png(tmp_path / "mixed" / "a" / "y.png", 1, size=9)
    with pytest.raises(DataError, match="different sizes"):
        load_images(f"folder:{tmp_path / 'mixed'}")
    assert load_images(f"folder:{tmp_path / 'mixed'}", image_size=8).images.shape == (2, 3, 8, 8)


def _fake_cifar_zip(path: Path, tmp: Path) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for split in ("train", "test"):
            for c, v in (("airplane", 30), ("truck", 220)):
                for i in range(2):
                    p = tmp / f"{split}{c}{i}.jpg"
                    from PIL import Image

                    Image.fromarray(np.full((32, 32, 3), v, np.uint8)).save(p, quality=95)
                    zf.write(p, f"cifar10/{split}/{c}/{i:04d}.jpg")
    return path


def test_cifar10_jpg_from_zip_and_extracted_folder(tmp_path):
    z = _fake_cifar_zip(tmp_path / "c.zip", tmp_path)
    a = load_images(f"cifar10-jpg:{z}", split="test")
    assert a.images.shape == (4, 3, 32, 32) and a.classes == ["airplane", "truck"] and a.labels.tolist() == [0, 0, 1, 1]
    dest = extract_zip(z, tmp_path / "extracted", progress=False)
    for root in (dest, dest / "cifar10"):
        b = load_images(f"cifar10-jpg:{root}", split="test")
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    with pytest.raises(DataError, match="already exists"):
        extract_zip(z, dest, progress=False)
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../outside.txt", "x")
    with pytest.raises(DataError, match="outside"):
        extract_zip(evil, tmp_path / "e2", progress=False)
    assert not (tmp_path / "e2").exists() and not (tmp_path / "outside.txt").exists()


@pytest.mark.skipif(not MNIST.is_dir(), reason="shared MNIST files not present")
def test_real_mnist_from_shared():
    d = load_images(f"mnist:{MNIST}", split="test")
    assert d.images.shape == (10000, 1, 28, 28)
    assert torch.bincount(d.labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.mark.skipif(not CIFAR_ZIP.is_file(), reason="shared CIFAR-10 JPEG zip not present")
def test_real_cifar10_jpg_zip_subset():
    d = load_images(f"cifar10-jpg:{CIFAR_ZIP}", split="test", limit=50, rng=torch.Generator().manual_seed(0))
    assert d.images.shape == (50, 3, 32, 32) and len(d.classes) == 10


# --------------------------------------------------------------------------- networks
@pytest.mark.parametrize("size", [28, 32, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_dcgan_shapes(size, channels):
    g = build("dcgan-g", image_size=size, channels=channels, nz=8, width=4)
    d = build("dcgan-d", image_size=size, channels=channels, width=4, norm="spectral")
    x = g(torch.randn(3, 8, 1, 1))
    assert x.shape == (3, channels, size, size) and x.abs().max() <= 1
    assert d(x).shape == (3,)
    with pytest.raises(ConfigError):
        build("dcgan-g", image_size=48, channels=channels)


# --------------------------------------------------------------------------- CLI: train -> fit-ratio -> sample
def _cli(*args):
    res = runner.invoke(app, [str(a) for a in args])
    return res.exit_code, res.output


def test_cli_image_pipeline(tmp_path):
    root = write_mnist(tmp_path / "mnist", n_train=96, n_test=32)
    ckpt = tmp_path / "g.pt"
    code, out = _cli(
        "train",
        "--data",
        f"mnist:{root}",
        "--epochs",
        1,
        "--batch-size",
        32,
        "--width",
        4,
        "--d-width",
        4,
        "--latent-dim",
        8,
        "--device",
        "cpu",
        "--out",
        ckpt,
        "--no-progress",
    )
    assert code == 0, out
    assert (tmp_path / "g_samples" / "epoch_001.png").is_file()
    gan = refine.load_gan(ckpt)
    assert gan.generator.output_range == "[-1,1]" and gan.config["meta"]["dataset"] == f"mnist:{root}"
    # resume to epoch 2: picks up its own settings
    code, out = _cli("train", "--resume", ckpt, "--epochs", 2, "--out", ckpt, "--no-progress", "--device", "cpu")
    assert code == 0 and "resumed at epoch 1" in out, out
    assert (tmp_path / "g_samples" / "epoch_002.png").is_file()
    code, out = _cli("train", "--resume", ckpt, "--epochs", 3, "--width", 8, "--out", ckpt, "--no-progress")
    assert code == 2 and "disagrees" in out
    straight = tmp_path / "straight.pt"  # one uninterrupted 2-epoch run gives the same weights as 1 epoch + resume
    code, out = _cli(
        "train",
        "--data",
        f"mnist:{root}",
        "--epochs",
        2,
        "--batch-size",
        32,
        "--width",
        4,
        "--d-width",
        4,
        "--latent-dim",
        8,
        "--device",
        "cpu",
        "--out",
        straight,
        "--no-progress",
    )
    assert code == 0, out
    a, b = torch.load(ckpt, weights_only=True), torch.load(straight, weights_only=True)
    for part in ("generator", "discriminator"):
        assert all(torch.equal(a[part]["state"][k], b[part]["state"][k]) for k in a[part]["state"])
    d_ratio = tmp_path / "d.pt"
    code, out = _cli(
        "fit-ratio",
        "--ckpt",
        ckpt,
        "--epochs",
        1,
        "--batch-size",
        16,
        "--n-calib",
        32,
        "--calibration",
        "logistic",
        "--device",
        "cpu",
        "--out",
        d_ratio,
        "--no-progress",
    )
    assert code == 0 and "logistic calibration" in out, out
    assert isinstance(refine.load_ratio(d_ratio), refine.DiscriminatorRatio)
    # refitted with early stopping by default; 96 images cannot spare the default 5,000 for it: a fifth of
    # the 64 left after calibration is held out instead
    meta = torch.load(d_ratio, weights_only=True)["meta"]
    assert (meta["patience"], meta["lr"], meta["n_val"], meta["n_train"]) == (3, 1e-4, 12, 96 - 32 - 12)
    ratio = tmp_path / "r.pt"
    code, out = _cli(
        "fit-ratio",
        "--ckpt",
        ckpt,
        "--kind",
        "feature-sp",
        "--n-val",
        16,
        "--feature-epochs",
        1,
        "--feature-widths",
        "4,4,8,8",
        "--feature-dim",
        8,
        "--head-hidden",
        "16",
        "--lambdas",
        "0,0.1",
        "--epochs",
        2,
        "--batch-size",
        16,
        "--device",
        "cpu",
        "--out",
        ratio,
        "--no-progress",
    )
    assert code == 0, out
    loaded = refine.load_ratio(ratio)
    assert isinstance(loaded, refine.ratio.FeatureRatio)
    meta = torch.load(ratio, weights_only=True)["meta"]
    assert meta["head"]["lambda"] in (0.0, 0.1) and "val_acc" in meta["feature_net"]
    for method, opts in (
        ("rs", ["-o", "burn_in=64", "-o", "batch_size=64"]),
        ("mh", ["-o", "k=2", "-o", "init=real"]),
        ("sir", ["-o", "candidates=3"]),
    ):
        out_dir = tmp_path / f"s_{method}"
        code, out = _cli(
            "sample",
            "--ckpt",
            ckpt,
            "--ratio",
            ratio,
            "--method",
            method,
            *opts,
            "-n",
            12,
            "--device",
            "cpu",
            "--out",
            out_dir,
            "--no-progress",
        )
        assert code == 0, out
        assert (out_dir / "samples.png").is_file()
        x = np.load(out_dir / "samples.npz")["x"]
        assert x.shape == (12, 1, 28, 28)
        assert json.loads((out_dir / "run.json").read_text())["method"] == method


def test_cli_image_errors(tmp_path):
    code, out = _cli(
        "train", "--data", f"mnist:{tmp_path / 'nope'}", "--epochs", 1, "--out", tmp_path / "g.pt", "--no-progress"
    )
    assert code == 2 and "mnist root" in out and "Traceback" not in out
    assert not (tmp_path / "g.pt").exists()
    root = write_mnist(tmp_path / "m")
    code, out = _cli(
        "train",
        "--data",
        f"mnist:{root}",
        "--image-size",
        48,
        "--epochs",
        1,
        "--out",
        tmp_path / "g.pt",
        "--no-progress",
    )
    assert code == 2 and "28, 32, 64" in out


PRETRAINED = Path(__file__).resolve().parents[1] / "pretrained"


@pytest.mark.skipif(not (PRETRAINED / "mnist_dre_f_sp.safetensors").is_file(), reason="shipped MNIST files not present")
def test_shipped_mnist_files_refine_with_rs(tmp_path):
    """The README's command, small: rejection sampling of the shipped DCGAN with its shipped DRE-F-SP ratio."""
    from refine.io.pretrained import pretrained_path

    ckpt, ratio = pretrained_path("mnist-dcgan"), pretrained_path("mnist-dre-f-sp")  # checks the manifest's sha256
    code, out = _cli(
        "sample",
        "--ckpt",
        ckpt,
        "--ratio",
        ratio,
        "--method",
        "rs",
        "-o",
        "burn_in=256",
        "-o",
        "batch_size=256",
        "-n",
        8,
        "--device",
        "cpu",
        "--out",
        tmp_path,
        "--no-progress",
    )
    assert code == 0, out
    assert np.load(tmp_path / "samples.npz")["x"].shape == (8, 1, 28, 28) and (tmp_path / "samples.png").is_file()


def test_converted_data_say_so(shared_dir):
    """Images resized or recoloured to match a generator are described as converted, wherever described."""
    native = load_images(
        f"mnist:{shared_dir / 'data' / 'mnist'}", split="test", limit=16, rng=torch.Generator().manual_seed(0)
    )
    assert "converted" not in native.describe() and "converted_from" not in native.info
    big = load_images(f"mnist:{shared_dir / 'data' / 'mnist'}", split="test", image_size=32, channels=3, limit=16)
    assert big.info["converted_from"] == "1x28x28"
    assert "3x32x32 (converted from 1x28x28 to match the generator)" in big.describe()


def test_refine_data_extract_and_show(tmp_path):
    z = _fake_cifar_zip(tmp_path / "c.zip", tmp_path)
    code, out = _cli("data", "extract", z, tmp_path / "x", "--no-progress")
    assert code == 0, out
    assert (tmp_path / "x" / "cifar10" / "test" / "truck" / "0001.jpg").is_file()
    code, out = _cli("data", "show", f"cifar10-jpg:{tmp_path / 'x'}", "--split", "test", "--no-progress")
    assert code == 0 and "4 images 3x32x32, 2 classes" in out, out
    code, out = _cli("data", "extract", z, tmp_path / "x", "--no-progress")  # the folder exists: refused, kept
    assert code == 2 and out.startswith("error:") and (tmp_path / "x" / "cifar10").is_dir()
    code, out = _cli("data", "show", f"cifar10-jpg:{tmp_path / 'x'}", "--split", "val")
    assert code == 2 and "unknown --split" in out
