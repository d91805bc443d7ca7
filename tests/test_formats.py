"""``refine sample --format npz|npz-uint8|png``: the same samples in the files other tools read.

A tiny random DCGAN (28 px, grey) draws the same seeded samples in every format; the PNG
folder and the ADM/EDM ``arr_0`` file hold exactly the 8-bit images ``refine eval`` makes of
the float samples, and the Fréchet distance refine reports for them equals the one computed
from the same features with pytorch-fid's statistics (read through its own image dataset)
and torch-fidelity's statistics functions. The fake MNIST, the classifier feature space and
the test isolation come from ``test_eval_images``.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from test_eval_images import _isolated, classifier, mnist  # noqa: F401 - fixtures shared with the eval tests
from typer.testing import CliRunner

from refine.cli import app
from refine.eval import classifier_space, to_uint8
from refine.generator import NormalPrior
from refine.io import save_gan
from refine.nets import arch_config, build
from refine.outputs import PngFolderWriter, Uint8NpzWriter

runner = CliRunner()
N = 24


def _cli(*args):
    res = runner.invoke(app, [str(a) for a in args])
    return res.exit_code, res.output


@pytest.fixture(scope="module")
def gan(tmp_path_factory, mnist) -> Path:  # noqa: F811
    """A tiny random DCGAN (28 px, 1 channel, output in [-1, 1]) whose checkpoint names the fake MNIST."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        g_arch = arch_config("dcgan-g", image_size=28, channels=1, nz=8, width=4)
        d_arch = arch_config("dcgan-d", image_size=28, channels=1, width=4, norm="none")
        G, D = build("dcgan-g", **g_arch["kwargs"]), build("dcgan-d", **d_arch["kwargs"])
        with torch.no_grad():  # larger weights than the default initialisation, so the images use the whole range
            for w in G.parameters():
                if w.dim() > 1:
                    w.normal_(0.0, 0.5)
    path = tmp_path_factory.mktemp("gan") / "g.pt"
    save_gan(
        path,
        generator=G.eval(),
        generator_arch=g_arch,
        prior=NormalPrior((8, 1, 1)),
        discriminator=D.eval(),
        discriminator_arch=d_arch,
        output_range="[-1,1]",
        meta={"dataset": f"mnist:{mnist}"},
    )
    return path


@pytest.fixture(scope="module")
def drawn(gan, tmp_path_factory) -> dict[str, Path]:
    """The same seeded samples (rejection sampling, so the samples depend on the ratio too) in each format."""
    out = {}
    for fmt in ("npz", "npz-uint8", "png"):
        folder = tmp_path_factory.mktemp(fmt)
        code, text = _cli(
            "sample",
            "--ckpt",
            gan,
            "-m",
            "rs",
            "-n",
            N,
            "--seed",
            5,
            "--format",
            fmt,
            "--device",
            "cpu",
            "--no-progress",
            "--out",
            folder,
        )
        assert code == 0, text
        out[fmt] = folder
    return out


def test_every_format_holds_the_same_images_and_the_record_says_which(drawn):
    x = np.load(drawn["npz"] / "samples.npz")["x"]
    want = to_uint8(torch.from_numpy(x), "[-1,1]").numpy()  # (N, 1, 28, 28), as refine eval rounds them
    assert want.shape == (N, 1, 28, 28) and len(np.unique(want)) > 10

    with np.load(drawn["npz-uint8"] / "samples_uint8.npz") as f:
        assert list(f.keys()) == ["arr_0"]
        arr = f["arr_0"]
    assert arr.dtype == np.uint8 and arr.shape == (N, 28, 28, 1)  # NHWC, as the ADM/EDM evaluators read it
    np.testing.assert_array_equal(arr.transpose(0, 3, 1, 2), want)

    from PIL import Image

    files = sorted((drawn["png"] / "samples").iterdir())
    assert [p.name for p in files] == [f"{i:06d}.png" for i in range(N)]
    decoded = np.stack([np.asarray(Image.open(p)) for p in files])
    assert Image.open(files[0]).mode == "L"
    np.testing.assert_array_equal(decoded[:, None], want)

    for fmt, name in (("npz", "samples.npz"), ("npz-uint8", "samples_uint8.npz"), ("png", "samples")):
        record = json.loads((drawn[fmt] / "run.json").read_text())
        assert record["format"] == fmt and name in record["files"] and "samples.png" in record["files"]
        assert not [p for p in drawn[fmt].iterdir() if p.name.startswith(".")]  # no staging left behind


def _pytorch_fid_decode(folder: Path) -> torch.Tensor:
    """The PNG files as pytorch-fid reads them (its ImagePathDataset: PIL, RGB, ToTensor), back to uint8 grey."""
    import torchvision.transforms as T
    from pytorch_fid.fid_score import ImagePathDataset

    files = sorted(folder.glob("*.png"))
    ds = ImagePathDataset(files, transforms=T.ToTensor())
    x = torch.stack([ds[i] for i in range(len(ds))])  # (N, 3, H, W) in [0, 1]
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 0], x[:, 2])  # grey, repeated into RGB
    return (x[:, :1] * 255).round().to(torch.uint8)


def _pytorch_fid_distance(real: np.ndarray, fake: np.ndarray) -> float:
    """pytorch-fid's statistics (np.mean, np.cov(rowvar=False)) and its distance formula, written without its
    ``sqrtm(..., disp=False)`` call, which newer SciPy releases reject."""
    from scipy import linalg

    mu1, s1, mu2, s2 = real.mean(axis=0), np.cov(real, rowvar=False), fake.mean(axis=0), np.cov(fake, rowvar=False)
    with warnings.catch_warnings():  # 8-d ReLU features of 24 images are rank-deficient; sqrtm then warns
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(s1.dot(s2))
    covmean = covmean[0] if isinstance(covmean, tuple) else covmean
    diff = mu1 - mu2
    return float(diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2 * np.trace(np.real(covmean)))


def test_png_and_npz_uint8_score_the_same_through_refine_pytorch_fid_and_torch_fidelity(drawn, mnist, classifier):  # noqa: F811
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

    from refine.data.images import load_images

    scores = {}
    for fmt, path in (("npz", "samples.npz"), ("npz-uint8", "samples_uint8.npz"), ("png", "samples")):
        code, text = _cli(
            "eval",
            "--samples",
            drawn[fmt] / path,
            "--data",
            f"mnist:{mnist}",
            "--features",
            classifier,
            "--metrics",
            "fid",
            "--no-cache",
            "--device",
            "cpu",
            "--no-progress",
            "--json",
        )
        assert code == 0, text
        scores[fmt] = json.loads(text)[0]["fd"]
    assert scores["npz"] > 0
    # the same uint8 images (checked exactly above); float32 feature extraction may round differently with the
    # images' memory placement, which the small distance amplifies to about 1e-8 relative
    assert scores["png"] == pytest.approx(scores["npz"], rel=1e-6) and scores["npz-uint8"] == pytest.approx(
        scores["npz"], rel=1e-6
    )

    space = classifier_space(classifier)
    f_real = space.extract(load_images(f"mnist:{mnist}", split="test").images)[0].double()
    with np.load(drawn["npz-uint8"] / "samples_uint8.npz") as f:  # as the ADM evaluator reads it
        adm = torch.from_numpy(f["arr_0"]).permute(0, 3, 1, 2).contiguous()
    png = _pytorch_fid_decode(drawn["png"] / "samples")
    assert torch.equal(adm, png)
    f_fake = space.extract(png)[0].double()
    pytorch_fid = _pytorch_fid_distance(f_real.numpy(), f_fake.numpy())
    fidelity = fid_statistics_to_metric(
        fid_features_to_statistics(f_real), fid_features_to_statistics(f_fake), verbose=False
    )["frechet_inception_distance"]
    # the matrix square root of a singular product is accurate to about sqrt(eps) * |S| (1e-8 relative), hence rel=1e-6
    assert scores["png"] == pytest.approx(pytorch_fid, rel=1e-6) and scores["png"] == pytest.approx(fidelity, rel=1e-6)


def test_image_formats_refuse_what_they_cannot_hold_before_writing(gan, tmp_path):
    out = tmp_path / "out"
    code, text = _cli(
        "sample", "-n", 10, "--format", "png", "--device", "cpu", "--no-progress", "--out", out
    )  # the shipped 2-D pair
    assert code == 2 and "writes 8-bit images" in text and "shape (2,)" in text, text
    assert not out.exists() or not any(out.iterdir())
    code, text = _cli(
        "sample", "--ckpt", gan, "-n", 10, "--format", "jpeg", "--device", "cpu", "--no-progress", "--out", out
    )
    assert code == 2 and "unknown --format 'jpeg'" in text, text
    code, text = _cli(
        "sample",
        "--ckpt",
        gan,
        "-n",
        10,
        "--format",
        "png",
        "--feature-stats",
        "inception",
        "--device",
        "cpu",
        "--no-progress",
        "--out",
        out,
    )
    assert code == 2 and "written by one process" in text, text
    assert not out.exists() or not any(out.iterdir())


def test_writers_stream_chunks_and_leave_nothing_when_aborted(tmp_path):
    """Chunks of any size give the file one write would; a failed write leaves no file or folder."""
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(10, 3, 4, 5, generator=g) * 2 - 1).numpy()
    want = to_uint8(torch.from_numpy(x), "[-1,1]").numpy().transpose(0, 2, 3, 1)
    with Uint8NpzWriter(tmp_path / "u.npz", 10, output_range="[-1,1]") as w:
        for part in np.array_split(x, [3, 4, 9]):
            w.write(x=part, z=np.zeros((len(part), 2)))
    np.testing.assert_array_equal(np.load(tmp_path / "u.npz")["arr_0"], want)
    with PngFolderWriter(tmp_path / "p", 10, output_range="[-1,1]") as w:
        for part in np.array_split(x, [7]):
            w.write(x=part)
    from PIL import Image

    got = np.stack([np.asarray(Image.open(tmp_path / "p" / f"{i:06d}.png")) for i in range(10)])
    np.testing.assert_array_equal(got, want)
    assert Image.open(tmp_path / "p" / "000000.png").mode == "RGB"

    for make, path in (
        (lambda p: PngFolderWriter(p, 10, output_range="[-1,1]"), tmp_path / "q"),
        (lambda p: Uint8NpzWriter(p, 10, output_range="[-1,1]"), tmp_path / "q.npz"),
    ):
        with pytest.raises(ValueError, match="declared"):
            with make(path) as w:
                w.write(x=x[:4])  # 4 of the 10 declared rows, then close
        assert not path.exists()


def test_eval_reads_an_adm_file_with_labels_beside_the_images(tmp_path):
    """ADM/EDM files may carry class labels as arr_1; the images are arr_0, NHWC uint8."""
    from refine.eval import load_image_samples

    images = np.random.default_rng(0).integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / "adm.npz", images, np.arange(6))
    x, info = load_image_samples(tmp_path / "adm.npz")
    assert info["array"] == "arr_0" and info["value_range"] == "[0,255]"
    assert torch.equal(x, torch.from_numpy(images).permute(0, 3, 1, 2))
