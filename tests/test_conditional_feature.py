"""cDR-RS's conditional feature-space ratio: the conditional SP loss, the head, the ratio file and the CLI."""

from __future__ import annotations

import gzip
import json
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import refine
from refine.cli import app
from refine.conditional import ConditionalFeatureRatio, ConditionalTarget, sample_conditional
from refine.data.images import load_images
from refine.errors import CheckpointError, ConfigError, DataError, ShapeError
from refine.io import safe_load, save_conditional_feature_ratio
from refine.nets import arch_config, build
from refine.ratio.conditional_feature import (
    ConditionalRatioHead,
    conditional_sp_loss,
    fit_conditional_ratio_head,
)
from refine.samplers import get_sampler
from refine.train.cgan import save_cgan_checkpoint, train_cgan

TINY_RESNET = dict(feature_dim=8, widths=(4, 4, 8, 8), stem_stride=2)
runner = CliRunner()


def _rng(seed=0):
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- the conditional SP loss
def _two_class_case():
    """Atoms 0..3 in two classes: per class, generator and data frequencies (100 samples each side)."""
    q = {0: [40, 30, 20, 10], 1: [25, 25, 25, 25]}
    p = {0: [10, 20, 30, 40], 1: [50, 20, 20, 10]}
    atoms_f, ys_f, atoms_r, ys_r = [], [], [], []
    for c in (0, 1):
        atoms_f.append(torch.repeat_interleave(torch.arange(4), torch.tensor(q[c])))
        atoms_r.append(torch.repeat_interleave(torch.arange(4), torch.tensor(p[c])))
        ys_f.append(torch.full((100,), c))
        ys_r.append(torch.full((100,), c))
    true = torch.tensor([[pc / qc for pc, qc in zip(p[c], q[c])] for c in (0, 1)], dtype=torch.float64)
    return torch.cat(atoms_f), torch.cat(ys_f), torch.cat(atoms_r), torch.cat(ys_r), true


@pytest.mark.parametrize("lam", [0.0, 1.0])
def test_conditional_sp_loss_minimiser_is_the_true_conditional_ratio(lam):
    af, yf, ar, yr, true = _two_class_case()
    r = torch.ones(2, 4, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [r], lr=1, max_iter=500, tolerance_grad=1e-12, tolerance_change=1e-15, line_search_fn="strong_wolfe"
    )

    def closure():
        opt.zero_grad()
        loss = conditional_sp_loss(r[yr, ar], r[yf, af], yf, lam, 2)
        loss.backward()
        return loss

    opt.step(closure)
    assert torch.allclose(r.detach(), true, atol=1e-6), (r, true)
    # the per-class penalty vanishes there: E_{G(.|y)}[r] = 1 in each class
    assert float(conditional_sp_loss(true[yr, ar], true[yf, af], yf, 10.0, 2)) == pytest.approx(
        float(conditional_sp_loss(true[yr, ar], true[yf, af], yf, 0.0, 2))
    )
    # a ratio right on average but wrong per class is penalised
    swapped = true.flip(0)
    assert float(conditional_sp_loss(swapped[yr, ar], swapped[yf, af], yf, lam, 2)) > float(
        conditional_sp_loss(true[yr, ar], true[yf, af], yf, lam, 2)
    )


def test_per_class_penalty_is_the_mean_over_classes():
    rf = torch.tensor([2.0, 2.0, 1.0, 1.0, 1.0, 0.5])
    y = torch.tensor([0, 0, 1, 1, 1, 3])
    base = float(conditional_sp_loss(rf, rf, y, 0.0, 4))
    # classes 0, 1 and 3 are present: ((2-1)^2 + 0 + (0.5-1)^2) / 3
    assert float(conditional_sp_loss(rf, rf, y, 1.0, 4)) - base == pytest.approx((1 + 0 + 0.25) / 3)


def _gaussian_classes(k=3, dim=4, seed=0):
    """Per class c: real features N(mu_c, I), generated N(nu_c, I); the true log r(f | c) is closed-form."""
    g = _rng(seed)
    mu = torch.randn(k, dim, generator=g) * 1.5
    nu = mu + torch.randn(k, dim, generator=g) * 0.6

    def draw(n_per):
        y = torch.arange(k).repeat_interleave(n_per)
        return mu[y] + torch.randn(len(y), dim, generator=g), nu[y] + torch.randn(len(y), dim, generator=g), y

    def true_log_r(f, yy):
        return -0.5 * ((f - mu[yy]) ** 2).sum(1) + 0.5 * ((f - nu[yy]) ** 2).sum(1)

    return draw, true_log_r


def test_conditional_head_recovers_per_class_gaussian_ratios():
    draw, true_log_r = _gaussian_classes()
    f_real, f_fake, y = draw(1500)
    f_real_val, f_fake_val, y_val = draw(300)
    head, cfg, report = fit_conditional_ratio_head(
        f_real,
        y,
        f_fake,
        y,
        f_real_val,
        y_val,
        f_fake_val,
        y_val,
        num_classes=3,
        lambdas=(0.0, 0.1),
        hidden=(32, 32),
        epochs=8,
        batch_size=128,
        rng=_rng(2),
    )
    assert cfg["name"] == "cond-ratio-head" and cfg["kwargs"]["num_classes"] == 3 and cfg["kwargs"]["embed_dim"] == 3
    assert report["lambda"] in (0.0, 0.1) and set(report["val_mean_r_fake_per_class"]) == {"0", "1", "2"}
    ratio = ConditionalFeatureRatio(_Identity(4), head, 3)
    f = f_fake[::7]
    yy = y[::7]
    est = ratio.log_ratio_from_features(f, yy)
    truth = true_log_r(f, yy)
    # the estimate tracks the true ratio of each class: rank correlation well above chance (0 for an uninformative head)
    for c in range(3):
        rho = float(torch.corrcoef(torch.stack([_rank(est[yy == c]), _rank(truth[yy == c])]))[0, 1])
        assert rho > 0.85, (c, rho)
    assert 0.7 < report["val_mean_r_fake"] < 1.3  # E_G(.|y)[r] = 1 for the true ratio
    # the label matters: the same features scored as another class give another ratio
    other = ratio.log_ratio_from_features(f, (yy + 1) % 3)
    assert float((other - est).abs().mean()) > 0.1


def _rank(t):
    return t.argsort().argsort().double()


class _Identity(torch.nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.feature_dim = dim

    def features(self, x):
        return x.flatten(1)


def test_fit_conditional_ratio_head_rejects_bad_inputs():
    f, y = torch.randn(64, 4), torch.arange(64) % 2
    ok = dict(num_classes=2, epochs=1, batch_size=16)
    with pytest.raises(DataError, match="outside"):
        fit_conditional_ratio_head(f, y + 1, f, y, f, y, f, y, **ok)
    with pytest.raises(DataError, match="no real training features"):
        fit_conditional_ratio_head(f, torch.zeros(64, dtype=torch.long), f, y, f, y, f, y, **ok)
    with pytest.raises(ShapeError):
        fit_conditional_ratio_head(f, y[:10], f, y, f, y, f, y, **ok)
    with pytest.raises(ConfigError, match="lambdas"):
        fit_conditional_ratio_head(f, y, f, y, f, y, f, y, lambdas=(-1.0,), **ok)


# --------------------------------------------------------------------------- the ratio object and its file
def _tiny_cond_ratio(k=3):
    fnet = build("resnet34-features", in_channels=1, num_classes=k, **TINY_RESNET).eval()
    head = ConditionalRatioHead(8, k, hidden=(16,)).eval()
    return ConditionalFeatureRatio(fnet, head, k, image_size=28)


def _save(path, ratio, k=3):
    save_conditional_feature_ratio(
        path,
        ratio,
        feature_arch=arch_config("resnet34-features", in_channels=1, num_classes=k, **TINY_RESNET),
        head_arch=arch_config("cond-ratio-head", in_dim=8, num_classes=k, embed_dim=k, hidden=[16], dropout=0.0),
        meta={"note": "test"},
    )


@pytest.mark.parametrize("name", ["r.pt", "r.safetensors"])
def test_conditional_feature_ratio_file_roundtrip(tmp_path, name):
    ratio = _tiny_cond_ratio()
    _save(tmp_path / name, ratio)
    loaded = refine.load_ratio(tmp_path / name)
    assert isinstance(loaded, ConditionalFeatureRatio) and loaded.num_classes == 3 and loaded.image_size == 28
    x, y = torch.rand(6, 1, 28, 28) * 2 - 1, torch.tensor([0, 1, 2, 2, 1, 0])
    assert torch.allclose(loaded.log_ratio(x, y), ratio.log_ratio(x, y), atol=1e-6)
    assert torch.allclose(loaded.at(2).log_ratio(x), ratio.log_ratio(x, torch.full((6,), 2)), atol=1e-6)
    assert safe_load(tmp_path / name, what="ratio file")["kind"] == "feature-sp-conditional"
    with pytest.raises(ShapeError):
        loaded.log_ratio(x, y[:3])


@pytest.mark.parametrize(
    "edit,needle",
    [
        (lambda o: o.update(num_classes=0), "num_classes"),
        (lambda o: o.update(num_classes="3"), "num_classes"),
        (lambda o: o.update(num_classes=4), "classes"),
        (lambda o: o.update(activation="exp"), "activation"),
        (lambda o: o.update(image_size=-1), "image_size"),
        (lambda o: o.update(image_size="28; rm -rf /"), "image_size"),
        (lambda o: o["head"].update(arch={"name": "ratio-head", "kwargs": {}}), "cond-ratio-head"),
        (lambda o: o["head"].update(state={k: v[:1] for k, v in o["head"]["state"].items()}), "do not fit"),
        (lambda o: o["feature_net"].update(arch={"name": "os.system", "kwargs": {}}), "feature network"),
    ],
)
def test_hostile_conditional_ratio_files_are_one_checkpoint_error(tmp_path, edit, needle):
    _save(tmp_path / "r.pt", _tiny_cond_ratio())
    obj = torch.load(tmp_path / "r.pt", weights_only=True)
    edit(obj)
    torch.save(obj, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match=needle):
        refine.load_ratio(tmp_path / "bad.pt")


def test_conditional_feature_ratio_drives_the_samplers_per_class():
    k = 3
    g = build("cdcgan-g", image_size=28, channels=1, nz=8, width=4, num_classes=k).eval()
    ratio = _tiny_cond_ratio(k)
    target = refine.wrap(g, latent_shape=(8, 1, 1), output_range="[-1,1]", num_classes=k, ratio=ratio)
    assert isinstance(target, ConditionalTarget)
    for method, opts in (
        ("rs", {"burn_in": 64, "batch_size": 64}),
        ("drs", {"burn_in": 64, "batch_size": 64}),
        ("mh", {"k": 3, "batch_size": 64}),
        ("sir", {"candidates": 4}),
        ("ddls", {"steps": 2}),
    ):
        res = sample_conditional(get_sampler(method, **opts), target, 7, classes=[2, 0], seed=0)
        assert res.y.tolist() == [2, 2, 2, 2, 0, 0, 0] and torch.isfinite(res.x).all(), method
        assert res.info["counts"] == {"2": 4, "0": 3}


# --------------------------------------------------------------------------- the CLI, end to end
def _idx(arr: np.ndarray) -> bytes:
    return bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape) + arr.tobytes()


def _write_mnist(root, n_train=240, n_test=40):
    """Fake MNIST files: label c is a bright bar at rows 2c+2..2c+5, on noise."""
    root.mkdir(parents=True, exist_ok=True)
    for split, n, seed in (("train", n_train, 0), ("t10k", n_test, 1)):
        g = np.random.default_rng(seed)
        labels = (np.arange(n) % 10).astype(np.uint8)
        images = g.integers(0, 30, size=(n, 28, 28)).astype(np.uint8)
        for i, c in enumerate(labels):
            images[i, 2 + 2 * c : 5 + 2 * c, 4:24] = 255
        for kind, arr in (("images-idx3", images), ("labels-idx1", labels)):
            with gzip.open(root / f"{split}-{kind}-ubyte.gz", "wb") as f:
                f.write(_idx(arr))
    return root


@pytest.fixture(scope="module")
def mnist_pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("cdre")
    root = _write_mnist(d / "mnist")
    data = load_images(f"mnist:{root}", split="train")
    run = train_cgan(data, epochs=1, rng=_rng(0), init_seed=0, batch_size=32, latent_dim=8, g_width=4, d_width=4)
    save_cgan_checkpoint(d / "cg.pt", run)
    return d, root


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


FIT = ["--kind", "feature-sp", "--no-progress", "--device", "cpu"]
SMALL = ["--n-val", 40, "--epochs", 2, "--batch-size", 32, "--feature-epochs", 1, "--lambdas", "0,0.1"]
SMALL += ["--feature-widths", "4,4,8,8", "--feature-dim", 8, "--stem-stride", 2, "--head-hidden", "16"]


def test_fit_ratio_conditional_then_sample_classes(mnist_pair, tmp_path):
    d, root = mnist_pair
    ratio = tmp_path / "cdre.safetensors"
    res = invoke(
        "fit-ratio", "--ckpt", d / "cg.pt", "--data", f"mnist:{root}", "--conditional", *FIT, *SMALL, "--out", ratio
    )
    assert res.exit_code == 0, res.output
    assert "conditional DRE-F-SP ratio for 10 classes" in res.output
    obj = safe_load(ratio, what="ratio file")
    assert obj["kind"] == "feature-sp-conditional" and obj["num_classes"] == 10 and obj["meta"]["conditional"]
    head = obj["meta"]["head"]
    assert head["lambda"] in (0.0, 0.1) and all(math.isfinite(r["val_loss"]) for r in head["lambdas"])
    out = tmp_path / "s"
    res = invoke(
        "sample", "--ckpt", d / "cg.pt", "--ratio", ratio, "--classes", "3,7", "-m", "rs", "-n", 9, "--seed", 0,
        "-o", "burn_in=64", "--out", out, "--no-progress", "--device", "cpu",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    s = np.load(out / "samples.npz")
    assert s["x"].shape == (9, 1, 28, 28) and s["y"].tolist() == [3] * 5 + [7] * 4
    record = json.loads((out / "run.json").read_text())
    assert record["info"]["counts"] == {"3": 5, "7": 4} and record["inputs"]["ratio"]["path"] == str(ratio)
    # the bounds of rs are those of the fitted ratio, not of the checkpoint's discriminator
    res = invoke(
        "sample", "--ckpt", d / "cg.pt", "--classes", "3,7", "-m", "rs", "-n", 9, "--seed", 0,
        "-o", "burn_in=64", "--out", tmp_path / "d", "--no-progress", "--device", "cpu",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    with_d = json.loads((tmp_path / "d" / "run.json").read_text())
    assert "path" not in with_d["inputs"]["ratio"]
    assert with_d["info"]["per_class"]["3"]["log_M"] != record["info"]["per_class"]["3"]["log_M"]


def test_fit_ratio_conditional_discriminator_calibrated_per_class_then_sample(mnist_pair, tmp_path):
    """--kind discriminator --conditional: the checkpoint's D(x, y) refitted, one logistic map per class, used by drs per class."""
    d, root = mnist_pair
    ratio = tmp_path / "cd.safetensors"
    res = invoke(
        "fit-ratio", "--ckpt", d / "cg.pt", "--data", f"mnist:{root}", "--conditional", "--epochs", 1,
        "--batch-size", 32, "--calibration", "logistic", "--n-calib", 100, "--no-progress", "--device", "cpu",
        "--out", ratio,
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "conditional discriminator as the ratio r(x | y) for 10 classes" in res.output
    obj = safe_load(ratio, what="ratio file")
    assert obj["kind"] == "discriminator-conditional" and obj["num_classes"] == 10 and len(obj["calibration"]) == 10
    per = obj["meta"]["calibration"]["per_class"]
    assert len(per) == 10 and all({"before", "after"} <= set(r) for r in per.values())
    assert obj["meta"]["n_train"] == 140 and len(obj["meta"]["history"]) == 1
    loaded = refine.load_ratio(ratio)
    assert loaded.calibration is not None and len({c.a for c in loaded.calibration}) > 1  # a map of each class's own
    out = tmp_path / "s"
    res = invoke(
        "sample", "--ckpt", d / "cg.pt", "--ratio", ratio, "--classes", "3,7", "-m", "drs", "-n", 8, "--seed", 0,
        "-o", "burn_in=64", "--out", out, "--no-progress", "--device", "cpu",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    record = json.loads((out / "run.json").read_text())
    assert record["info"]["counts"] == {"3": 4, "7": 4} and record["inputs"]["ratio"]["path"] == str(ratio)


def test_fit_ratio_conditional_refusals(mnist_pair, tmp_path):
    d, root = mnist_pair
    out = tmp_path / "r.pt"
    shipped_unconditional = refine.io.pretrained_path("mnist-dcgan")
    cases = [
        (["--ckpt", shipped_unconditional, "--data", f"mnist:{root}", "--conditional", *FIT], "is unconditional"),
        (["--ckpt", d / "cg.pt", "--data", f"mnist:{root}", *FIT], "add --conditional"),
        (["--ckpt", d / "cg.pt", "--data", f"mnist:{root}", "--conditional", "--patience", 2], "--patience"),
        (["--ckpt", d / "cg.pt", "--data", f"mnist:{root}", "--conditional", "--n-calib", 1], "--n-calib"),
        (["--ckpt", d / "cg.pt", "--conditional", "--data", "grid25"], "labelled image dataset"),
    ]
    unlabelled = tmp_path / "unlabelled"
    unlabelled.mkdir()
    from PIL import Image

    for i in range(60):
        Image.fromarray(np.full((28, 28), i * 4, dtype=np.uint8)).save(unlabelled / f"{i}.png")
    cases.append(
        (["--ckpt", d / "cg.pt", "--data", f"folder:{unlabelled}", "--conditional", *FIT, *SMALL], "no class labels")
    )
    for args, needle in cases:
        res = invoke("fit-ratio", *args, "--out", out)
        assert res.exit_code == 2 and needle in res.output and len(res.output.strip().splitlines()) == 1, res.output
        assert not out.exists()


def test_sample_refuses_an_unconditional_ratio_for_a_conditional_checkpoint(mnist_pair, tmp_path):
    d, _ = mnist_pair
    res = invoke(
        "sample", "--ckpt", d / "cg.pt", "--ratio", refine.io.pretrained_path("mnist-dre-f-sp"),
        "-m", "rs", "-n", 4, "--out", tmp_path / "s", "--no-progress",
    )  # fmt: skip
    assert res.exit_code == 2 and "conditional ratio r(x | y)" in res.output, res.output
    assert not (tmp_path / "s" / "run.json").exists()


pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------- refine eval of a conditional checkpoint
@pytest.fixture(scope="module")
def labelled_samples(mnist_pair, tmp_path_factory):
    """The folder of a ``refine sample`` run of the conditional pair: 20 samples of classes 3 and 7."""
    d, _ = mnist_pair
    s = tmp_path_factory.mktemp("labelled") / "s"
    res = invoke(
        "sample", "--ckpt", d / "cg.pt", "-m", "none", "-n", 20, "--classes", "3,7", "--seed", 0, "--out", s,
        "--no-progress", "--device", "cpu",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    return s


@pytest.fixture(scope="module")
def classifier(mnist_pair):
    """A tiny classifier of the fake MNIST's 10 labels (its feature space scores the conditional pair)."""
    from refine.eval import default_classifier_arch, save_classifier, train_classifier

    d, root = mnist_pair
    train = load_images(f"mnist:{root}", split="train")
    arch = default_classifier_arch(1, 10, feature_dim=8, widths=(4, 4, 8, 8))
    net, arch, _ = train_classifier(train, arch=arch, epochs=1, batch_size=40, rng=_rng(0))
    path = d / "clf.pt"
    save_classifier(path, net, arch, image_size=28, channels=1, classes=train.classes, meta={"dataset": "fake"})
    return path


def test_eval_of_a_conditional_checkpoint_is_scored_class_by_class(mnist_pair, classifier, labelled_samples, tmp_path):
    """intra-FD, label accuracy and the per-class table for the classes asked for; the raw row equals the intra
    scores of `refine sample`'s own samples (same seed, same per-class streams) computed directly."""
    from refine.eval import classifier_space, labelled_reference, to_uint8
    from refine.metrics.intra import intra_scores

    d, root = mnist_pair
    ev = tmp_path / "ev"
    res = invoke(
        "eval", "--ckpt", d / "cg.pt", "--data", f"mnist:{root}", "--features", classifier, "--methods", "none,drs",
        "-o", "drs.burn_in=64", "-n", 20, "--classes", "3,7", "--seed", 0, "--no-cache", "--device", "cpu",
        "--out", ev, "--no-progress",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "Per class" in res.output and "| intra_fd |" in res.output
    record = json.loads((ev / "eval.json").read_text())
    rows = {r["method"]: r for r in record["rows"]}
    assert list(rows) == ["none", "drs"] and record["classes"] == [3, 7]
    for r in rows.values():
        assert r["counts"] == {"3": 10, "7": 10} and [p["class"] for p in r["per_class"]] == [3, 7]
        assert r["intra_fd"] >= 0 and 0 <= r["label_accuracy"] <= 1 and r["fd"] >= 0
    assert rows["drs"]["d_evals_per_sample"] > 0 and (ev / "eval.png").stat().st_size > 1000
    assert "Per class" in (ev / "eval.md").read_text()
    # the same numbers from the samples refine sample writes
    s = labelled_samples
    npz = np.load(s / "samples.npz")
    space = classifier_space(classifier)
    ref = labelled_reference(space, f"mnist:{root}", image_shape=(1, 28, 28), split="test")
    feats, logits = space.extract(to_uint8(torch.from_numpy(npz["x"]), "[-1,1]"))
    direct = intra_scores(feats, logits, npz["y"], ref.features, ref.labels)
    assert rows["none"]["intra_fd"] == pytest.approx(direct["intra_fd"], rel=1e-9)
    assert rows["none"]["label_accuracy"] == pytest.approx(direct["label_accuracy"], rel=1e-12)


def test_eval_conditional_refusals(mnist_pair, classifier, tmp_path):
    d, root = mnist_pair
    base = [
        "eval",
        "--data",
        f"mnist:{root}",
        "--features",
        classifier,
        "-n",
        10,
        "--no-progress",
        "--out",
        tmp_path / "o",
    ]
    cases = [
        ([*base, "--ckpt", refine.io.pretrained_path("mnist-dcgan"), "--classes", "3"], "unconditional"),
        ([*base, "--ckpt", d / "cg.pt", "--metrics", "fid"], "--metrics"),
        ([*base, "--ckpt", d / "cg.pt", "--methods", "mh", "-o", "mh.init=real"], "real images"),
        ([*base, "--ckpt", d / "cg.pt", "--classes", "12"], "class"),
    ]
    for args, needle in cases:
        res = invoke(*args)
        assert res.exit_code == 2 and needle in res.output and len(res.output.strip().splitlines()) == 1, res.output
        assert not (tmp_path / "o").exists()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    spec=st.one_of(
        st.text(alphabet=st.characters(codec="ascii", exclude_characters="\x00"), min_size=1, max_size=12),
        st.lists(st.integers(-3, 14), min_size=1, max_size=4).map(lambda v: ",".join(map(str, v))),
        st.sampled_from(["balanced", "BALANCED", " 3", "3,", ",", "1e1", "0x3", "3.0", "-0", "10"]),
    )
)
def test_generated_classes_specs_are_a_run_or_one_error_line(mnist_pair, tmp_path_factory, spec):
    """Any --classes text: a run whose labels are the classes asked for, or one error line, exit 2 and nothing written."""
    from refine.conditional import class_plan, parse_classes

    d, _ = mnist_pair
    out = tmp_path_factory.mktemp("classes") / "out"
    res = invoke(
        "sample", "--ckpt", d / "cg.pt", "-m", "none", "-n", 12, "--classes", spec, "--out", out,
        "--no-progress", "--device", "cpu",
    )  # fmt: skip
    if res.exit_code == 0:
        plan = class_plan(12, parse_classes(spec, 10), 10)
        y = np.load(out / "samples.npz")["y"].tolist()
        assert y == [c for c, m in plan for _ in range(m)]
    else:
        assert res.exit_code == 2 and res.output.startswith("error:"), res.output
        assert len(res.output.strip().splitlines()) == 1 and not out.exists()


def test_eval_of_labelled_samples_files_matches_the_checkpoint_route(
    mnist_pair, classifier, labelled_samples, tmp_path
):
    """refine eval --samples FILE --classes: the labels y that refine sample wrote decide the classes; the same
    samples give the same intra-FD through either route, and --classes 3 keeps class 3 only."""
    d, root = mnist_pair
    common = ["--data", f"mnist:{root}", "--features", classifier, "--no-cache", "--device", "cpu", "--no-progress"]
    s = labelled_samples
    res = invoke(
        "eval", "--ckpt", d / "cg.pt", "--methods", "none", "-n", 20, "--classes", "3,7", "--seed", 0, *common, "--json"
    )
    assert res.exit_code == 0, res.output
    from_ckpt = json.loads(res.output)[0]
    out = tmp_path / "ev"
    res = invoke("eval", "--samples", s / "samples.npz", "--classes", "all", *common, "--out", out)
    assert res.exit_code == 0, res.output
    row = json.loads((out / "eval.json").read_text())["rows"][0]
    assert row["counts"] == {"3": 10, "7": 10} and row["intra_fd"] == pytest.approx(from_ckpt["intra_fd"], rel=1e-9)
    assert row["label_accuracy"] == from_ckpt["label_accuracy"] and (out / "eval.png").is_file()
    res = invoke("eval", "--samples", s / "samples.npz", "--classes", "3", *common, "--json")
    assert res.exit_code == 0 and json.loads(res.output)[0]["counts"] == {"3": 10}, res.output
    np.savez(tmp_path / "nolabels.npz", x=np.load(s / "samples.npz")["x"])
    from PIL import Image

    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(3):
        Image.fromarray(np.full((28, 28), 40 * i, dtype=np.uint8)).save(flat / f"{i}.png")
    for args, needle in (
        (["--samples", tmp_path / "nolabels.npz", "--classes", "all"], "'y'"),
        (["--samples", flat, "--classes", "all"], "subfolder per class"),
        (["--samples", s / "samples.npz", "--classes", "all", "--metrics", "fid"], "--metrics"),
    ):
        res = invoke("eval", *args, *common, "--out", tmp_path / "o")
        assert res.exit_code == 2 and needle in res.output and len(res.output.strip().splitlines()) == 1, res.output
        assert not (tmp_path / "o").exists()


def test_conditional_samples_as_png_class_folders_and_as_adm_npz(mnist_pair, classifier, tmp_path):
    """--format png: one subfolder per class (ImageFolder's layout); --format npz-uint8: arr_0 images and arr_1
    labels (ADM's convention); both the same 8-bit images as the npz run's x, in the same order."""
    from PIL import Image

    from refine.eval import to_uint8

    d, _ = mnist_pair
    runs = {}
    for fmt in ("npz", "png", "npz-uint8"):
        runs[fmt] = tmp_path / fmt
        res = invoke(
            "sample", "--ckpt", d / "cg.pt", "-m", "none", "-n", 9, "--classes", "3,7", "--seed", 0, "--format", fmt,
            "--out", runs[fmt], "--no-progress", "--device", "cpu",
        )  # fmt: skip
        assert res.exit_code == 0, res.output
    ref = np.load(runs["npz"] / "samples.npz")
    x8 = to_uint8(torch.from_numpy(ref["x"]), "[-1,1]").numpy()[:, 0]
    assert ref["y"].tolist() == [3] * 5 + [7] * 4
    files = sorted((runs["png"] / "samples").glob("*/*.png"), key=lambda p: p.name)
    assert [p.parent.name for p in files] == ["3"] * 5 + ["7"] * 4
    assert all(np.array_equal(np.asarray(Image.open(p)), x8[i]) for i, p in enumerate(files))
    adm = np.load(runs["npz-uint8"] / "samples_uint8.npz")
    assert adm["arr_0"].dtype == np.uint8 and np.array_equal(adm["arr_0"][..., 0], x8)
    assert adm["arr_1"].dtype == np.int64 and adm["arr_1"].tolist() == ref["y"].tolist()
    assert json.loads((runs["png"] / "run.json").read_text())["format"] == "png"
    # refine eval reads the class folders back as labels: the same scores as the npz file's
    _, root = mnist_pair
    scored = {}
    for fmt, path in (("npz", runs["npz"] / "samples.npz"), ("png", runs["png"] / "samples")):
        res = invoke(
            "eval", "--samples", path, "--classes", "all", "--data", f"mnist:{root}", "--features", classifier,
            "--no-cache", "--device", "cpu", "--no-progress", "--json",
        )  # fmt: skip
        assert res.exit_code == 0, res.output
        scored[fmt] = json.loads(res.output)[0]
    assert scored["png"]["counts"] == scored["npz"]["counts"] == {"3": 5, "7": 4}
    # the same 8-bit images (checked above), read two ways: equal up to float32 feature arithmetic
    assert scored["png"]["intra_fd"] == pytest.approx(scored["npz"]["intra_fd"], rel=1e-5)
