"""``refine eval`` on images, offline: FID / IS / precision-recall before and after refinement.

Everything runs on synthetic data: a fake MNIST (idx files), a tiny random DCGAN checkpoint, a
tiny classifier trained here for the dataset-trained feature space, and randomly initialised
FID-Inception weights written to a temporary file and found through ``$REFINE_INCEPTION_WEIGHTS``
(the published weights are not available offline). Inception runs at 299x299, so it sees only a
handful of images here; most checks use the classifier's feature space.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from refine.cli import app
from refine.errors import CheckpointError, ConfigError, DataError
from refine.eval import (
    FEATURES_FORMAT,
    classifier_space,
    load_image_samples,
    real_reference,
    save_classifier,
    score_images,
    to_uint8,
    train_classifier,
)
from refine.generator import NormalPrior
from refine.io import save_gan
from refine.metrics.fid import StatisticsCache
from refine.metrics.inception import FID_WEIGHTS_FILE, WEIGHTS_ENV, build_fid_inception
from refine.nets import arch_config, build

runner = CliRunner()


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path, one_thread):
    """One thread (torch and BLAS), nothing downloaded, no Inception weights unless a test sets them, a private cache."""
    from threadpoolctl import threadpool_limits

    limits = threadpool_limits(
        1
    )  # a 2048x2048 eigendecomposition on a shared CPU is far slower with contending BLAS threads

    def no_download(*a, **k):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setenv("REFINE_CACHE", str(tmp_path / "cache"))
    yield
    limits.restore_original_limits()


def _cli(*args):
    res = runner.invoke(app, [str(a) for a in args])
    return res.exit_code, res.output


# --------------------------------------------------------------------------- synthetic inputs
def _idx(arr: np.ndarray) -> bytes:
    return bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape) + arr.tobytes()


def _digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """28x28 images: class k is a bright bar at height 2 + 2k on a noisy background."""
    g = np.random.default_rng(seed)
    labels = (np.arange(n) % 10).astype(np.uint8)
    images = g.integers(0, 40, size=(n, 28, 28)).astype(np.uint8)
    for i, k in enumerate(labels):
        images[i, 2 + 2 * k : 5 + 2 * k, 4:24] = 255
    return images, labels


@pytest.fixture(scope="module")
def mnist(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mnist")
    for split, n, seed in (("train", 80, 0), ("t10k", 40, 1)):
        images, labels = _digits(n, seed)
        for kind, arr in (("images-idx3", images), ("labels-idx1", labels)):
            with gzip.open(root / f"{split}-{kind}-ubyte.gz", "wb") as f:
                f.write(_idx(arr))
    return root


@pytest.fixture(scope="module")
def gan(tmp_path_factory, mnist) -> Path:
    """A tiny random DCGAN (28 px, 1 channel) whose checkpoint names the fake MNIST."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        g_arch = arch_config("dcgan-g", image_size=28, channels=1, nz=8, width=4)
        d_arch = arch_config("dcgan-d", image_size=28, channels=1, width=4, norm="none")
        G, D = build("dcgan-g", **g_arch["kwargs"]), build("dcgan-d", **d_arch["kwargs"])
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
def classifier(tmp_path_factory, mnist) -> Path:
    """A tiny ResNet-34 classifier trained one epoch on the fake MNIST (format refine.features)."""
    from refine.data.images import load_images
    from refine.eval import default_classifier_arch

    torch.set_num_threads(1)
    train = load_images(f"mnist:{mnist}", split="train")
    arch = default_classifier_arch(1, 10, feature_dim=8, widths=(4, 4, 8, 8))
    net, arch, report = train_classifier(
        train, arch=arch, epochs=1, batch_size=40, rng=torch.Generator().manual_seed(0)
    )
    path = tmp_path_factory.mktemp("clf") / "clf.pt"
    save_classifier(path, net, arch, image_size=28, channels=1, classes=train.classes, meta={"dataset": "fake mnist"})
    return path


@pytest.fixture
def inception_weights(tmp_path_factory, monkeypatch) -> Path:
    """Random FID-Inception weights under the real file name, found through $REFINE_INCEPTION_WEIGHTS."""
    path = tmp_path_factory.getbasetemp() / "inception" / FID_WEIGHTS_FILE
    if not path.is_file():
        path.parent.mkdir(exist_ok=True)
        net = build_fid_inception()
        g = torch.Generator().manual_seed(0)
        for m in net.modules():  # He initialisation keeps the features O(1) through the network
            if isinstance(m, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu", generator=g)
        torch.nn.init.normal_(net.fc.weight, std=0.05, generator=g)
        torch.save(net.state_dict(), path)
    monkeypatch.setenv(WEIGHTS_ENV, str(path))
    return path


def _write_pngs(folder: Path, images: torch.Tensor) -> None:
    from PIL import Image

    folder.mkdir(parents=True)
    for i, im in enumerate(images):
        Image.fromarray(im[0].numpy(), mode="L").save(folder / f"{i:04d}.png")


# --------------------------------------------------------------------------- the library
def test_to_uint8_rounds_as_a_png_stores_and_checks_the_declared_range():
    x = torch.tensor([-1.0, -0.5, 0.0, 1.0]).view(1, 1, 2, 2)
    assert to_uint8(x, "[-1,1]").flatten().tolist() == [0, 64, 128, 255]  # (x + 1) * 127.5, rounded half to even
    assert to_uint8(x.clamp(0, 1), "[0,1]").flatten().tolist() == [0, 0, 0, 255]
    with pytest.raises(ConfigError, match=r"declared"):
        to_uint8(x, "[0,1]")
    with pytest.raises(ConfigError, match=r"--output-range"):
        to_uint8(x, "none")


def test_real_images_against_themselves_score_zero_fid_and_full_precision_recall(mnist, classifier):
    """The test split scored against itself: FID = 0 up to rounding, precision = recall = coverage = 1."""
    from refine.data.images import load_images

    space = classifier_space(classifier)
    ref = real_reference(space, f"mnist:{mnist}", image_shape=(1, 28, 28), split="test", n_prdc=40, cache=None)
    real = load_images(f"mnist:{mnist}", split="test").images
    s = score_images(space, real.flip(0), ref, k=3, is_splits=2)  # order does not matter
    assert s["fd"] < 1e-6 * float(np.trace(ref.sigma))
    assert s["precision"] == s["recall"] == s["coverage"] == 1.0
    assert 1.0 <= s["is_mean"] <= 10.0
    # the training split differs from the test split: FID clearly above zero
    other = load_images(f"mnist:{mnist}", split="train").images
    assert score_images(space, other, ref, k=3, is_splits=2)["fd"] > 1e-3 * float(np.trace(ref.sigma))


def test_real_statistics_are_cached_by_dataset_split_preprocessing_and_network(mnist, classifier, tmp_path):
    space = classifier_space(classifier)
    cache = StatisticsCache(tmp_path / "c")
    first = real_reference(space, f"mnist:{mnist}", image_shape=(1, 28, 28), split="test", n_prdc=20, cache=cache)
    assert first.cache["statistics_hit"] is False and first.cache["prdc_features_hit"] is False
    again = real_reference(space, f"mnist:{mnist}", image_shape=(1, 28, 28), split="test", n_prdc=20, cache=cache)
    assert again.cache["statistics_hit"] and again.cache["prdc_features_hit"]
    np.testing.assert_array_equal(first.mu, again.mu)
    torch.testing.assert_close(first.features, again.features)
    # another split, another image size: separate entries
    other = real_reference(space, f"mnist:{mnist}", image_shape=(1, 32, 32), split="test", n_prdc=20, cache=cache)
    assert other.cache["statistics_hit"] is False
    assert len(list((tmp_path / "c" / "fid_stats").glob("*.npz"))) == 2


class _MeanClass(torch.nn.Module):
    """A stand-in classifier: six pixels as features, the class is the integer part of the mean pixel, modulo 10."""

    def forward(self, x):
        x = x.float().flatten(1)
        return x[:, :6] / 255.0, torch.nn.functional.one_hot(x.mean(1).floor().long() % 10, 10).float()


def test_class_histogram_kl_is_zero_for_the_data_and_grows_as_classes_drift(mnist, tmp_path):
    """class_kl = KL(real || samples) of the predicted-class histograms: the formula, near 0 for the real images themselves,
    large for one class only; the cached reference keeps the counts, and a cache written without them is recomputed."""
    from refine.data.images import load_images
    from refine.eval import FeatureSpace

    space = FeatureSpace(
        short="classifier",
        network="mean-class",
        key="mean-class",
        module=_MeanClass().eval(),
        transform=lambda x: x,
        logits="mean",
    )
    cache = StatisticsCache(tmp_path / "c")
    ref = real_reference(space, f"mnist:{mnist}", image_shape=(1, 28, 28), split="test", n_prdc=30, cache=cache)
    real = load_images(f"mnist:{mnist}", split="test").images
    cls = real.float().flatten(1).mean(1).floor().long() % 10
    sub = torch.randperm(len(real), generator=torch.Generator().manual_seed(0))[:30].sort().values
    np.testing.assert_array_equal(ref.class_counts, np.bincount(cls[sub].numpy(), minlength=10))
    assert (ref.class_counts > 0).sum() >= 3  # the stand-in spreads the digits over several classes

    def expected(idx):
        q = (np.bincount(cls[idx].numpy(), minlength=10) + 0.5) / (len(idx) + 5.0)
        p = ref.class_counts / ref.class_counts.sum()
        return float(sum(pi * np.log(pi / qi) for pi, qi in zip(p, q) if pi > 0))

    same = score_images(space, real[sub], ref, metrics=("classes",))
    assert set(same) == {"n", "class_kl"} and same["class_kl"] == pytest.approx(expected(sub), rel=1e-12)
    top = int(torch.bincount(cls[sub]).argmax())
    (one,) = torch.nonzero(cls == top, as_tuple=True)
    drift = score_images(space, real[one], ref, metrics=("classes",))["class_kl"]
    assert drift == pytest.approx(expected(one), rel=1e-12) and drift > same["class_kl"]
    # a cache written before the counts were kept is recomputed, not trusted
    (npz,) = (tmp_path / "c" / "prdc_features").glob("*.npz")
    with np.load(npz) as f:
        kept = {k: f[k] for k in f.files if k != "class_counts"}
    np.savez(npz, **kept)
    again = real_reference(space, f"mnist:{mnist}", image_shape=(1, 28, 28), split="test", n_prdc=30, cache=cache)
    assert again.cache["statistics_hit"] and not again.cache["prdc_features_hit"]
    np.testing.assert_array_equal(again.class_counts, ref.class_counts)
    hit = real_reference(space, f"mnist:{mnist}", image_shape=(1, 28, 28), split="test", n_prdc=30, cache=cache)
    assert hit.cache["prdc_features_hit"]
    np.testing.assert_array_equal(hit.class_counts, ref.class_counts)
    # a space without logits has no class histogram to compare
    blind = FeatureSpace(
        short="classifier", network="pixels", key="px", module=_MeanClass().eval(), transform=lambda x: x, logits=None
    )
    with pytest.raises(ConfigError, match="class logits"):
        score_images(blind, real[sub], ref, metrics=("classes",))


def test_samples_from_npz_and_from_a_png_folder_are_the_same_images(tmp_path):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 1, 28, 28, generator=g) * 2 - 1
    np.savez(tmp_path / "s.npz", x=x.numpy())
    a, info = load_image_samples(tmp_path / "s.npz")
    assert info["value_range"] == "[-1,1]" and info["value_range_source"] == "inferred"
    _write_pngs(tmp_path / "png", a)
    b, info = load_image_samples(tmp_path / "png")
    assert info["kind"] == "folder"
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    np.savez(tmp_path / "hwc.npz", images=a.permute(0, 2, 3, 1).numpy())  # uint8 (N, H, W, C) under another name
    torch.testing.assert_close(load_image_samples(tmp_path / "hwc.npz")[0], a, rtol=0, atol=0)


# --------------------------------------------------------------------------- the command
def test_eval_generator_in_a_classifier_feature_space(gan, mnist, classifier, tmp_path):
    out = tmp_path / "ev"
    common = [
        "eval",
        "--ckpt",
        gan,
        "--features",
        classifier,
        "-n",
        24,
        "--is-splits",
        2,
        "--batch-size",
        16,
        "--device",
        "cpu",
        "--no-progress",
    ]
    code, text = _cli(
        *common, "--methods", "none,sir,drs", "-o", "sir.candidates=4", "-o", "drs.burn_in=64", "--out", out
    )
    assert code == 0, text
    assert "Features: classifier resnet34-features 8-d features from clf.pt" in text
    record = json.loads((out / "eval.json").read_text())
    rows = {r["method"]: r for r in record["rows"]}
    assert list(rows) == ["none", "sir", "drs"]
    for r in rows.values():
        assert r["features"] == record["features"]["network"]
        assert (
            "fid" not in r
            and r["fd"] >= 0
            and 1.0 <= r["is_mean"] <= 10.0
            and 0 <= r["precision"] <= 1
            and 0 <= r["recall"] <= 1
            and r["class_kl"] >= 0
        )
        assert r["n"] == 24 and r["g_evals_per_sample"] >= 1
    assert rows["sir"]["g_evals_per_sample"] == pytest.approx(4.0)
    ref = record["reference"]
    assert (
        ref["split"] == "test"
        and ref["n_fid"] == 40
        and ref["n_prdc"] == 24
        and ref["cache"]["statistics_hit"] is False
    )
    assert (out / "eval.md").read_text().startswith("Features: ") and (out / "eval.png").stat().st_size > 1000
    assert "class_kl: KL(real || samples)" in (out / "eval.md").read_text() and "| class_kl |" in text
    # the raw generator's row is reproducible, and the second run reuses the cached real statistics
    code, text = _cli(*common, "--methods", "none", "--out", tmp_path / "again")
    assert code == 0, text
    again = json.loads((tmp_path / "again" / "eval.json").read_text())
    assert again["reference"]["cache"]["statistics_hit"] and again["reference"]["cache"]["prdc_features_hit"]
    assert again["rows"][0]["fd"] == pytest.approx(rows["none"]["fd"], rel=1e-9)
    code, text = _cli(*common, "--methods", "none", "--json")
    assert code == 0 and json.loads(text)[0]["precision"] == rows["none"]["precision"], text


def test_eval_in_the_feature_space_of_a_dre_f_sp_ratio(gan, classifier, tmp_path):
    """A feature-sp ratio file serves as the feature space; used as the ratio too, the report says so."""
    from refine.eval import load_classifier
    from refine.io import save_feature_ratio
    from refine.ratio.feature import FeatureRatio, RatioHead

    net, info = load_classifier(classifier)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        head = RatioHead(8, hidden=(4,)).eval()
    save_feature_ratio(
        tmp_path / "r.pt",
        FeatureRatio(net, head, image_size=28),
        feature_arch=info["arch"],
        head_arch=arch_config("ratio-head", in_dim=8, hidden=[4], dropout=0.0),
        meta={"dataset": "fake mnist"},
    )
    out = tmp_path / "ev"
    code, text = _cli(
        "eval",
        "--ckpt",
        gan,
        "--ratio",
        tmp_path / "r.pt",
        "--features",
        tmp_path / "r.pt",
        "--methods",
        "none,sir",
        "-o",
        "sir.candidates=2",
        "-n",
        12,
        "--is-splits",
        2,
        "--device",
        "cpu",
        "--no-progress",
        "--out",
        out,
    )
    assert code == 0, text
    record = json.loads((out / "eval.json").read_text())
    assert (
        record["features"]["kind"] == "DRE-F-SP feature network"
        and "the ratio's own feature network" in record["features"]["network"]
    )
    assert [r["method"] for r in record["rows"]] == ["none", "sir"] and all(
        r["features"] == record["features"]["network"] for r in record["rows"]
    )


def test_a_method_over_its_budget_is_a_row_not_the_end_of_the_table(mnist, classifier):
    from refine.eval import evaluate_methods, markdown_report
    from refine.generator import LatentGenerator
    from refine.target import LatentTarget

    class Sharp:  # log r spans hundreds of nats: rejection sampling accepts almost nothing
        differentiable = False

        def log_ratio(self, x):
            return 300.0 * x[:, 0, 0, 0]

    net = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(8, 28 * 28), torch.nn.Tanh(), torch.nn.Unflatten(1, (1, 28, 28))
    )
    gen = LatentGenerator(net.eval().requires_grad_(False), "normal", latent_shape=(8,), output_range="[-1,1]")
    space = classifier_space(classifier)
    ref = real_reference(space, f"mnist:{mnist}", image_shape=(1, 28, 28), n_prdc=16)
    rows = evaluate_methods(
        LatentTarget(gen, Sharp()),
        [("none", {}), ("rs", {"budget": 2.0, "burn_in": 64}), ("sir", {"candidates": 2})],
        16,
        seed=0,
        space=space,
        reference=ref,
        output_range="[-1,1]",
        is_splits=2,
    )
    assert [r["method"] for r in rows] == ["none", "rs", "sir"]
    assert "fd" not in rows[1] and "raise -o budget" in rows[1]["error"] and rows[0]["fd"] >= 0 and rows[2]["fd"] >= 0
    assert "| error |" in markdown_report(rows, space, ref).splitlines()[3]


def test_eval_samples_route_npz_and_folder(gan, mnist, classifier, tmp_path):
    """refine sample -> samples.npz -> PNG files: both score identically; the real test images score FID 0."""
    s = tmp_path / "s"
    code, text = _cli(
        "sample", "--ckpt", gan, "--method", "none", "-n", 12, "--device", "cpu", "--out", s, "--no-progress"
    )
    assert code == 0, text
    x8 = to_uint8(torch.from_numpy(np.load(s / "samples.npz")["x"]), "[-1,1]")
    _write_pngs(tmp_path / "png", x8)
    from refine.data.images import load_images

    _write_pngs(tmp_path / "real", load_images(f"mnist:{mnist}", split="test").images)
    out = tmp_path / "ev"
    code, text = _cli(
        "eval",
        "--samples",
        s / "samples.npz",
        "--samples",
        tmp_path / "png",
        "--samples",
        tmp_path / "real",
        "--data",
        f"mnist:{mnist}",
        "--features",
        classifier,
        "--is-splits",
        2,
        "--device",
        "cpu",
        "--no-progress",
        "--out",
        out,
    )
    assert code == 0, text
    rows = json.loads((out / "eval.json").read_text())["rows"]
    assert rows[0]["fd"] == pytest.approx(rows[1]["fd"], rel=1e-12, abs=1e-9)
    assert rows[0]["precision"] == rows[1]["precision"] and rows[0]["is_mean"] == pytest.approx(
        rows[1]["is_mean"], rel=1e-12
    )
    assert rows[2]["fd"] < 1e-6 * max(rows[0]["fd"], 1e-3) and rows[2]["precision"] == rows[2]["recall"] == 1.0
    assert (out / "eval.png").is_file()


def test_eval_with_inception_offline(inception_weights, tmp_path):
    """The FID/IS pipeline with Inception weights from $REFINE_INCEPTION_WEIGHTS (random here, and marked as not the published
    ones): four real test images, written as PNG files and scored against the test split they came from, have FID 0 and
    precision = recall = 1."""
    root = tmp_path / "mnist4"
    root.mkdir()
    for split, n, seed in (("train", 4, 0), ("t10k", 4, 1)):
        images, labels = _digits(n, seed)
        for kind, arr in (("images-idx3", images), ("labels-idx1", labels)):
            with gzip.open(root / f"{split}-{kind}-ubyte.gz", "wb") as f:
                f.write(_idx(arr))
    _write_pngs(tmp_path / "png", torch.from_numpy(_digits(4, 1)[0])[:, None])
    out = tmp_path / "ev"
    code, text = _cli(
        "eval",
        "--samples",
        tmp_path / "png",
        "--data",
        f"mnist:{root}",
        "--is-splits",
        2,
        "--batch-size",
        4,
        "--no-cache",
        "--device",
        "cpu",
        "--no-progress",
        "--out",
        out,
    )
    assert code == 0, text
    record = json.loads((out / "eval.json").read_text())
    f = record["features"]
    assert f["short"] == "inception" and f["weights"] == str(inception_weights) and f["published_weights"] is False
    assert "NOT the published weights" in f["network"] and "1008-way" in f["logits"]
    assert record["reference"]["n_fid"] == 4 and record["reference"]["cache"] == {"enabled": False}
    row = record["rows"][0]
    assert (
        record["reference"]["trace_sigma"] > 1e-2
    )  # features far from zero (He initialisation): the FID below is zero, not tiny by scale
    assert (
        "fd" not in row
        and row["fid"] < 1e-6 * record["reference"]["trace_sigma"]
        and row["precision"] == row["recall"] == row["coverage"] == 1.0
    )
    assert 1.0 <= row["is_mean"] <= 2.0 + 1e-9  # two splits of two images: at most 2 classes per split


def test_missing_inception_weights_is_one_line(gan, tmp_path):
    out = tmp_path / "ev"
    code, text = _cli(
        "eval", "--ckpt", gan, "--methods", "none", "-n", 4, "--device", "cpu", "--no-progress", "--out", out
    )
    assert code == 2
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert len(lines) == 1 and FID_WEIGHTS_FILE in lines[0] and WEIGHTS_ENV in lines[0] and "--features" in lines[0], (
        text
    )
    assert "Traceback" not in text and not out.exists()
    code, text = _cli(
        "eval",
        "--ckpt",
        gan,
        "--methods",
        "none",
        "-n",
        4,
        "--inception-weights",
        tmp_path / "nope.pth",
        "--no-progress",
    )
    assert code == 2 and FID_WEIGHTS_FILE in text and "nope.pth" in text


@pytest.mark.parametrize(
    "case",
    [
        "ratio-as-features",
        "gan-as-features",
        "bad-split",
        "image-samples-without-data",
        "2d-with-image-flags",
        "too-few-for-is",
        "unknown-range",
        "threshold-on-images",
    ],
)
def test_image_eval_bad_inputs_are_one_line(case, gan, mnist, classifier, tmp_path):
    from refine.io import load_gan, save_discriminator_ratio

    base = ["eval", "--device", "cpu", "--no-progress", "--out", tmp_path / "o"]
    if case == "ratio-as-features":
        loaded = load_gan(gan)
        save_discriminator_ratio(tmp_path / "r.pt", loaded.ratio, loaded.config["discriminator"]["arch"])
        args, want = (
            ["--ckpt", gan, "--methods", "none", "-n", 4, "--features", tmp_path / "r.pt"],
            "ratio file of kind 'discriminator'",
        )
    elif case == "gan-as-features":
        args, want = ["--ckpt", gan, "--methods", "none", "-n", 4, "--features", gan], "not a feature network"
    elif case == "bad-split":
        args, want = (
            ["--ckpt", gan, "--methods", "none", "-n", 4, "--features", classifier, "--split", "val"],
            "--split",
        )
    elif case == "image-samples-without-data":
        np.savez(tmp_path / "s.npz", x=np.zeros((4, 1, 28, 28), np.float32))
        args, want = ["--samples", tmp_path / "s.npz", "--features", classifier], "NAME:ROOT"
    elif case == "2d-with-image-flags":
        args, want = ["--methods", "none", "-n", 10, "--features", classifier], "apply to image datasets"
    elif case == "threshold-on-images":
        args, want = (
            ["--ckpt", gan, "--methods", "none", "-n", 4, "--features", classifier, "--threshold", 2],
            "--threshold applies to 2-D",
        )
    elif case == "too-few-for-is":
        args, want = (
            ["--ckpt", gan, "--methods", "none", "-n", 6, "--features", classifier],
            "splits needs at least 10 samples",
        )
    else:
        np.savez(tmp_path / "s.npz", x=np.zeros((4, 1, 28, 28), np.float32))
        args, want = (
            [
                "--samples",
                tmp_path / "s.npz",
                "--data",
                f"mnist:{mnist}",
                "--features",
                classifier,
                "--samples-range",
                "0..1",
            ],
            "--samples-range",
        )
    code, text = _cli(*base, *args)
    assert code == 2, text
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert len(lines) == 1 and want in lines[0] and "Traceback" not in text, text
    assert not (tmp_path / "o").exists()


def test_train_classifier_command(mnist, tmp_path):
    """`refine train-classifier` writes a classifier file that serves as a feature space; a bad --data is one error line."""
    out = tmp_path / "clf.pt"
    code, text = _cli(
        "train-classifier",
        "--data",
        f"mnist:{mnist}",
        "--out",
        out,
        "--epochs",
        "1",
        "--batch-size",
        "40",
        "--widths",
        "4,4,8,8",
        "--feature-dim",
        "8",
        "--device",
        "cpu",
    )
    assert code == 0 and f"-> {out}" in text, text
    space = classifier_space(out)
    assert f"trained on mnist:{mnist}, held-out accuracy" in space.network and space.logits.endswith(
        "10-way class logits"
    )
    code, text = _cli("train-classifier", "--data", f"mnist:{tmp_path / 'none'}", "--out", tmp_path / "x.pt")
    assert code == 2 and "mnist root" in text and "Traceback" not in text, text
    assert not (tmp_path / "x.pt").exists()
    code, text = _cli("train-classifier", "--data", f"mnist:{mnist}", "--out", tmp_path / "x.pt", "--widths", "4,x")
    assert code == 2 and "--widths takes four comma-separated integers" in text, text
    code, text = _cli("train-classifier", "--data", f"mnist:{mnist}", "--out", tmp_path / "x.pt", "--epochs", "0")
    assert code == 2 and "need --epochs >= 1" in text and not (tmp_path / "x.pt").exists(), text


def test_feature_files_are_checked(tmp_path, classifier):
    torch.save(
        {"format": FEATURES_FORMAT, "version": 1, "arch": {"name": "mlp", "kwargs": {}}, "state": {}}, tmp_path / "f.pt"
    )
    with pytest.raises(CheckpointError):
        classifier_space(tmp_path / "f.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        classifier_space(tmp_path / "missing.pt")
    shutil.copy(classifier, tmp_path / "c.pt")
    assert classifier_space(tmp_path / "c.pt").key == classifier_space(classifier).key  # keyed by content, not by path
    with pytest.raises(DataError):
        load_image_samples(tmp_path / "nothing-here")


# --------------------------------------------------------------------------- metrics, reference files, other feature spaces
@pytest.fixture(scope="module")
def timm_weights(tmp_path_factory) -> Path:
    """Random weights of timm's smallest ResNet (test_resnet), saved as safetensors: the network is built here, never downloaded."""
    import timm
    from safetensors.torch import save_file

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = timm.create_model("test_resnet", pretrained=False)  # with its classifier head, which refine drops
    path = tmp_path_factory.mktemp("timm") / "test_resnet.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return path


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_metric_keys_name_the_feature_space():
    from refine.metrics.keys import DEFAULT_METRICS, FD, FID, KD_MEAN, KID_MEAN, metric_keys, parse_metrics

    assert (FID, FD, KID_MEAN, KD_MEAN) == ("fid", "fd", "kid_mean", "kd_mean")
    assert metric_keys(True).fd == "fid" and metric_keys(False).fd == "fd" and metric_keys(False).kd_std == "kd_std"
    assert parse_metrics(None) == DEFAULT_METRICS == ("fid", "is", "prdc", "classes")
    assert parse_metrics("prdc, KID,fd") == ("fid", "kid", "prdc")
    with pytest.raises(ConfigError, match="unknown metric"):
        parse_metrics("fid,lpips")


def test_eval_in_a_timm_space_with_local_weights_records_network_and_hash(mnist, timm_weights, tmp_path):
    """--features timm:test_resnet --features-weights: keys fd/kd_* (not fid), the network and the weights' sha256 in every row."""
    from refine.data.images import load_images

    _write_pngs(tmp_path / "real", load_images(f"mnist:{mnist}", split="test").images[:20])
    out = tmp_path / "ev"
    code, text = _cli(
        "eval",
        "--samples",
        tmp_path / "real",
        "--data",
        f"mnist:{mnist}",
        "--features",
        "timm:test_resnet",
        "--features-weights",
        timm_weights,
        "--metrics",
        "fid,kid,prdc",
        "--kid-subsets",
        5,
        "--kid-subset-size",
        10,
        "--batch-size",
        20,
        "--device",
        "cpu",
        "--no-progress",
        "--out",
        out,
    )
    assert code == 0, text
    record = json.loads((out / "eval.json").read_text())
    sha = _sha256(timm_weights)
    assert record["features"]["timm_model"] == "test_resnet" and record["features"]["sha256"] == sha
    assert record["metrics"] == ["fid", "kid", "prdc"] and record["keys"]["fd"] == "fd"
    (row,) = record["rows"]
    assert "timm test_resnet" in row["features"] and sha[:12] in row["features"] and row["features_sha256"] == sha
    assert "fid" not in row and "kid_mean" not in row and "is_mean" not in row
    assert row["fd"] >= 0 and np.isfinite(row["kd_mean"]) and row["kid_subset_size"] == 10 and row["kid_subsets"] == 5
    assert 0 <= row["precision"] <= 1 and "| fd | kd_mean | kd_std | precision |" in (out / "eval.md").read_text()


def test_timm_space_refuses_missing_or_mismatched_weights(timm_weights, tmp_path):
    from safetensors.torch import save_file

    code, text = _cli("eval", "--samples", tmp_path, "--data", "mnist:/nowhere", "--features", "timm:test_resnet")
    assert code == 2 and "--features-weights" in text and "never downloads" in text, text
    save_file({"fc.weight": torch.zeros(3, 3)}, str(tmp_path / "other.safetensors"))
    from refine.eval import load_feature_space

    with pytest.raises(CheckpointError, match="do not fit timm model test_resnet"):
        load_feature_space("timm:test_resnet", features_weights=tmp_path / "other.safetensors")
    with pytest.raises(ConfigError, match="timm has no model"):
        load_feature_space("timm:no_such_net_xyz", features_weights=timm_weights)
    with pytest.raises(ConfigError, match="--features-weights is for"):
        load_feature_space("inception", features_weights=timm_weights)


def test_ref_stats_file_in_pytorch_fid_format_gives_the_same_distance_as_the_dataset(mnist, classifier, tmp_path):
    """Statistics written elsewhere (np.savez_compressed(mu=, sigma=), as pytorch-fid --save-stats does) score exactly as
    the dataset they were computed from; the record names the file and its sha256. Without --data, KID needs real images."""
    from refine.data.images import load_images

    space = classifier_space(classifier)
    ref = real_reference(space, f"mnist:{mnist}", image_shape=(1, 28, 28), split="test", n_prdc=40, cache=None)
    stats = tmp_path / "elsewhere.npz"
    np.savez_compressed(stats, mu=ref.mu, sigma=ref.sigma)
    _write_pngs(tmp_path / "train", load_images(f"mnist:{mnist}", split="train").images[:30])
    common = [
        "eval",
        "--samples",
        tmp_path / "train",
        "--features",
        classifier,
        "--device",
        "cpu",
        "--no-progress",
        "--no-cache",
    ]
    code, text = _cli(*common, "--data", f"mnist:{mnist}", "--metrics", "fid", "--out", tmp_path / "a")
    assert code == 0, text
    code, text = _cli(*common, "--ref-stats", stats, "--metrics", "fid", "--out", tmp_path / "b")
    assert code == 0, text
    a, b = (json.loads((tmp_path / d / "eval.json").read_text()) for d in ("a", "b"))
    assert a["rows"][0]["fd"] > 0 and b["rows"][0]["fd"] == pytest.approx(a["rows"][0]["fd"], rel=1e-9)
    sf = b["reference"]["statistics_file"]
    assert (
        sf["sha256"] == _sha256(stats)
        and sf["path"] == str(stats.resolve())
        and sf["format"] == "pytorch-fid (mu, sigma)"
    )
    assert "elsewhere.npz" in text and _sha256(stats)[:12] in text
    code, text = _cli(*common, "--ref-stats", stats, "--metrics", "fid,kid")
    assert code == 2 and "--data" in text and len(text.strip().splitlines()) == 1, text
    np.savez_compressed(tmp_path / "wide.npz", mu=np.zeros(3), sigma=np.eye(3))  # not this space's dimension
    code, text = _cli(*common, "--ref-stats", tmp_path / "wide.npz", "--metrics", "fid")
    assert code == 2 and "3-dimensional" in text, text


def test_ref_stats_from_refine_sample_feature_stats(gan, mnist, classifier, tmp_path):
    """refine sample --feature-stats writes feature_stats.npz; refine eval --ref-stats reads it (here: samples against their own statistics)."""
    s = tmp_path / "s"
    code, text = _cli(
        "sample",
        "--ckpt",
        gan,
        "--method",
        "none",
        "-n",
        16,
        "--device",
        "cpu",
        "--out",
        s,
        "--no-progress",
        "--feature-stats",
        classifier,
    )
    assert code == 0, text
    code, text = _cli(
        "eval",
        "--samples",
        s / "samples.npz",
        "--ref-stats",
        s / "feature_stats.npz",
        "--features",
        classifier,
        "--metrics",
        "fid,is",
        "--is-splits",
        2,
        "--device",
        "cpu",
        "--no-progress",
        "--json",
    )
    assert code == 0, text
    (row,) = json.loads(text)
    assert row["fd"] < 1e-6 and row["is_mean"] >= 1.0  # the same samples, the same features: distance 0 up to rounding


def test_metrics_choose_what_is_computed(mnist, classifier, tmp_path):
    from refine.data.images import load_images

    space = classifier_space(classifier)
    ref = real_reference(space, f"mnist:{mnist}", image_shape=(1, 28, 28), split="test", n_prdc=40, cache=None)
    x = load_images(f"mnist:{mnist}", split="train").images[:30]
    only = score_images(
        space, x, ref, metrics=("kid",), kid_subsets=3, kid_subset_size=20, kid_rng=torch.Generator().manual_seed(0)
    )
    assert set(only) == {"n", "kd_mean", "kd_std", "kid_subset_size", "kid_subsets"}
    again = score_images(
        space, x, ref, metrics=("kid",), kid_subsets=3, kid_subset_size=20, kid_rng=torch.Generator().manual_seed(0)
    )
    assert again == only
    default = score_images(space, x, ref, is_splits=2)
    assert {"fd", "is_mean", "precision", "coverage"} <= set(default) and "kd_mean" not in default
    code, text = _cli(
        "eval", "--samples", tmp_path, "--data", f"mnist:{mnist}", "--features", classifier, "--metrics", "fid,ssim"
    )
    assert code == 2 and "unknown metric" in text, text


def test_png_samples_score_the_same_through_refine_and_through_pytorch_fid_and_torch_fidelity_statistics(
    mnist, classifier, tmp_path
):
    """One folder of PNG files (what pytorch-fid and torch-fidelity read): refine eval's fd equals the distance that
    pytorch-fid's statistics (np.mean, np.cov(rowvar=False)) and torch-fidelity's (fid_features_to_statistics,
    fid_statistics_to_metric) give on the same features of the same decoded images."""
    from PIL import Image
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

    from refine.data.images import load_images

    _write_pngs(tmp_path / "png", load_images(f"mnist:{mnist}", split="train").images[:30])
    code, text = _cli(
        "eval",
        "--samples",
        tmp_path / "png",
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
    ours = json.loads(text)[0]["fd"]
    space = classifier_space(classifier)
    decoded = torch.from_numpy(np.stack([np.asarray(Image.open(p)) for p in sorted((tmp_path / "png").glob("*.png"))]))[
        :, None
    ]
    real = load_images(f"mnist:{mnist}", split="test").images
    f_fake, _ = space.extract(decoded)
    f_real, _ = space.extract(real)
    a, b = f_real.double().numpy(), f_fake.double().numpy()
    mu1, s1, mu2, s2 = np.mean(a, axis=0), np.cov(a, rowvar=False), np.mean(b, axis=0), np.cov(b, rowvar=False)
    diff = mu1 - mu2
    import warnings

    from scipy import linalg

    with warnings.catch_warnings():  # the 8-d features of a ReLU network are rank-deficient here; sqrtm then warns
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(s1.dot(s2))
    covmean = covmean[0] if isinstance(covmean, tuple) else covmean
    # a matrix square root of a singular product is accurate to about sqrt(eps) * |S| (1e-8 relative), hence rel=1e-6 below
    pytorch_fid_formula = float(diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2 * np.trace(np.real(covmean)))
    fidelity = fid_statistics_to_metric(
        fid_features_to_statistics(f_real.double()), fid_features_to_statistics(f_fake.double()), verbose=False
    )["frechet_inception_distance"]
    assert ours > 0
    assert ours == pytest.approx(pytorch_fid_formula, rel=1e-6) and ours == pytest.approx(fidelity, rel=1e-6)


def test_inception_space_keys_are_fid_and_kid():
    """The same computation is keyed fid/kid_* only when the space is Inception's (a stand-in network here, same code path)."""
    from refine.eval import FeatureSpace, RealReference
    from refine.metrics.fid import feature_statistics

    class Pool(torch.nn.Module):
        def forward(self, x):
            return x.float().flatten(1)[:, :6] / 255.0  # six pixels as 6-d features

    g = torch.Generator().manual_seed(0)
    real, fake = (torch.randint(0, 256, (40, 3, 8, 8), dtype=torch.uint8, generator=g) for _ in range(2))
    keyed = {}
    for short in ("inception", "classifier"):
        space = FeatureSpace(
            short=short, network="stand-in", key="k", module=Pool().eval(), transform=lambda x: x, logits=None
        )
        feats, _ = space.extract(real)
        ref = RealReference(
            dataset="d",
            split="test",
            n=40,
            mu=feature_statistics(feats)[0],
            sigma=feature_statistics(feats)[1],
            features=feats,
            image_shape=(3, 8, 8),
            network="stand-in",
            preprocessing={},
            cache={},
        )
        keyed[short] = score_images(space, fake, ref, metrics=("fid", "kid"), kid_subsets=2, kid_subset_size=20)
    assert {"fid", "kid_mean", "kid_std"} <= set(keyed["inception"]) and "fd" not in keyed["inception"]
    assert {"fd", "kd_mean", "kd_std"} <= set(keyed["classifier"]) and "fid" not in keyed["classifier"]
    assert (
        keyed["inception"]["fid"] == keyed["classifier"]["fd"]
        and keyed["inception"]["kid_mean"] == keyed["classifier"]["kd_mean"]
    )


def test_sample_balance_classifier(gan, classifier, tmp_path):
    """--balance-classifier: exact counts per predicted class, y in samples.npz, the classifier's path, sha256 and quotas in run.json."""
    import json

    from refine.eval.classifier import load_classifier
    from refine.io import file_sha256

    net, _ = load_classifier(classifier)
    raw = tmp_path / "raw"
    code, text = _cli("sample", "--ckpt", gan, "-n", 40, "--device", "cpu", "--out", raw, "--no-progress")
    assert code == 0, text
    with torch.no_grad():
        pred = net(torch.from_numpy(np.load(raw / "samples.npz")["x"])).argmax(1)
    counts = torch.bincount(pred, minlength=10)
    common = [c for c in counts.argsort(descending=True)[:2].tolist() if counts[c] > 0]  # a tiny GAN may make one class
    probs = [0.0] * 10
    for c in common:
        probs[c] = 1 / len(common)
    out = tmp_path / "bal"
    args = ["sample", "--ckpt", gan, "-n", 9, "--device", "cpu", "--out", out, "--no-progress"]
    args += ["--balance-classifier", classifier, "--balance-probs", ",".join(map(str, probs))]
    code, text = _cli(*args)
    assert code == 0, text
    npz = np.load(out / "samples.npz")
    y = torch.from_numpy(npz["y"])
    with torch.no_grad():
        assert torch.equal(net(torch.from_numpy(npz["x"])).argmax(1), y)
    counts = torch.bincount(y, minlength=10)
    assert sorted(counts[common].tolist()) == ([4, 5] if len(common) == 2 else [9]) and int(counts.sum()) == 9
    rec = json.loads((out / "run.json").read_text())
    assert rec["balance"]["sha256"] == file_sha256(classifier) and sum(rec["balance"]["quotas"]) == 9
    assert rec["balance"]["classifier"] == str(classifier)
    for bad, msg in (
        (["--balance-probs", "data"], "applies with --balance-classifier"),
        (["--balance-classifier", tmp_path / "nope.pt"], "no such file"),
        (["--balance-classifier", classifier, "--format", "png"], "not available with --balance-classifier"),
        (["--balance-classifier", classifier, "--balance-probs", "1,x"], "expected uniform, data"),
        (["--balance-classifier", classifier, "--balance-probs", "1,1"], "has 2 classes but"),
    ):
        code, text = _cli("sample", "--ckpt", gan, "-n", 5, "--device", "cpu", "--out", tmp_path / "b", *bad)
        assert code != 0 and msg in text, text
        assert not (tmp_path / "b" / "run.json").exists()
