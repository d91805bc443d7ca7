"""Foreign generators and discriminators: every route end to end, one-line mismatches, and
files that would run code are refused without running it."""

import hashlib
import importlib
import importlib.util
import io
import json
import pathlib
import pickle
import sys
import typing
import zipfile
from dataclasses import dataclass

import numpy as np
import pytest
import safetensors.torch
import torch
from torch import nn
from typer.testing import CliRunner

import refine
from refine.checks import check_gradients
from refine.cli import app
from refine.errors import CheckpointError, NotDifferentiableError
from refine.io.foreign import FixedBatch, detect_format, load_discriminator, load_generator, load_network
from refine.samplers.base import SAMPLERS, Sampler, SampleResult

runner = CliRunner()

ARCH = """
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, i=2, o=2, h=8):
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(i, h), nn.Linear(h, o)])

    def forward(self, x):
        return self.layers[1](torch.relu(self.layers[0](x.flatten(1))))


class NoGrad(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, z):
        with torch.no_grad():
            return self.net(z)


def generator(h=8):
    return Net(2, 2, h)


def critic(h=8):
    return Net(2, 1, h)


def critic3():
    return Net(3, 1, 8)


def two_scores():
    return Net(2, 2, 8)
"""


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def sample_cli(tmp_path, *args):
    out = tmp_path / "out"
    res = invoke("sample", *args, "--out", out, "--no-progress", "--device", "cpu")
    return res, out


def load_x(out):
    with np.load(out / "samples.npz", allow_pickle=False) as f:
        return torch.from_numpy(f["x"])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("foreign")
    (d / "tiny_arch.py").write_text(ARCH)
    sys.path.insert(0, str(d))
    try:
        mod = importlib.import_module("tiny_arch")
        torch.manual_seed(0)
        G, D = mod.generator().eval(), mod.critic().eval()
        torch.save(G.state_dict(), d / "G.pt")
        torch.save(D.state_dict(), d / "D.pt")
        torch.save({"netG": G.state_dict(), "netD": D.state_dict(), "epoch": 3}, d / "both.pt")
        torch.save({"module." + k: v for k, v in G.state_dict().items()}, d / "dp.pt")
        torch.save(mod.critic3().state_dict(), d / "D3.pt")
        torch.save(mod.two_scores().state_dict(), d / "D2out.pt")
        torch.jit.script(G).save(str(d / "G.ts"))
        torch.jit.trace(D, torch.randn(3, 2)).save(str(d / "D.ts"))
        torch.jit.script(mod.NoGrad(G)).save(str(d / "Gng.ts"))
        torch.export.save(torch.export.export(G, (torch.randn(16, 2),)), d / "G16.pt2")
        torch.export.save(
            torch.export.export(D, (torch.randn(4, 2),), dynamic_shapes=({0: torch.export.Dim("b")},)), d / "D.pt2"
        )
        torch.export.save(
            torch.export.export(mod.NoGrad(G), (torch.randn(4, 2),), dynamic_shapes=({0: torch.export.Dim("b")},)),
            d / "Gng.pt2",
        )
        torch.save(G, d / "whole.pt")
        safetensors.torch.save_file(G.state_dict(), str(d / "G.safetensors"))
        img = nn.Sequential(nn.Linear(4, 12), nn.Unflatten(1, (3, 2, 2)), nn.Tanh()).eval()
        torch.jit.script(img).save(str(d / "img.ts"))
        refine.save_gan(
            d / "refine.pt",
            generator=refine.nets.build("mlp", in_dim=2, out_dim=2, hidden=4, depth=1),
            generator_arch={"name": "mlp", "kwargs": {"in_dim": 2, "out_dim": 2, "hidden": 4, "depth": 1}},
            prior=refine.NormalPrior((2,)),
        )
        yield type("Files", (), {"dir": d, "G": G, "D": D, "mod": mod})
    finally:
        sys.path.remove(str(d))


def api_result(G, D, method, n, **opts):
    target = refine.wrap(G, latent_shape=2, discriminator=D, output="logit")
    return refine.sample(target, method, n=n, rng=torch.Generator().manual_seed(0), **opts).x


# --------------------------------------------------------------------------- routes end to end
def test_state_dict_route_matches_the_python_api(files, tmp_path):
    d = files.dir
    res, out = sample_cli(
        tmp_path,
        "--ckpt",
        d / "G.pt",
        "--arch",
        "tiny_arch:generator",
        "--latent-shape",
        2,
        "--disc",
        d / "D.pt",
        "--disc-arch",
        f"{d / 'tiny_arch.py'}:critic",
        "--disc-output",
        "logit",
        "-m",
        "drs",
        "-o",
        "burn_in=256",
        "-n",
        64,
    )
    assert res.exit_code == 0, res.output
    x = load_x(out)
    assert torch.equal(x, api_result(files.G, files.D, "drs", 64, burn_in=256))
    run = json.loads((out / "run.json").read_text())
    ck = run["inputs"]["checkpoint"]
    assert ck["format"] == "state_dict" and ck["arch"] == "tiny_arch:generator"
    assert ck["sha256"] == hashlib.sha256((d / "G.pt").read_bytes()).hexdigest()
    assert run["inputs"]["ratio"]["discriminator"]["output"] == "logit"


def test_eval_runs_on_a_foreign_pair(files):
    d = files.dir
    res = invoke(
        "eval",
        "--ckpt",
        d / "G.pt",
        "--arch",
        "tiny_arch:generator",
        "--latent-shape",
        2,
        "--disc",
        d / "D.ts",
        "--trust-code",
        "--disc-output",
        "logit",
        "--methods",
        "none,sir",
        "-o",
        "sir.candidates=4",
        "--data",
        "grid25",
        "-n",
        100,
        "--json",
        "--no-progress",
        "--device",
        "cpu",
    )
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)
    assert [r["method"] for r in rows] == ["none", "sir"] and all(r["n"] == 100 for r in rows)


def test_fit_ratio_for_a_foreign_generator_then_sample_with_it(files, tmp_path):
    d = files.dir
    gen = ["--ckpt", d / "G.pt", "--arch", "tiny_arch:generator", "--latent-shape", 2]
    ratio = tmp_path / "ratio.pt"
    res = invoke(
        "fit-ratio",
        *gen,
        "--data",
        "grid25",
        "--epochs",
        1,
        "--n-train",
        1024,
        "--batch-size",
        256,
        "--out",
        ratio,
        "--no-progress",
        "--device",
        "cpu",
    )
    assert res.exit_code == 0, res.output
    assert "a fresh discriminator" in res.output and ratio.exists()
    res, out = sample_cli(tmp_path, *gen, "--ratio", ratio, "-m", "sir", "-o", "candidates=4", "-n", 32)
    assert res.exit_code == 0, res.output
    assert load_x(out).shape == (32, 2)
    ck = refine.io.safe_load(ratio, what="ratio file")["meta"]["checkpoint"]
    assert ck["arch"] == "tiny_arch:generator" and ck["sha256"] == hashlib.sha256((d / "G.pt").read_bytes()).hexdigest()


@pytest.mark.parametrize(
    "extra,needle",
    [
        ([], "pass --data"),
        (
            ["--data", "grid25", "--disc", "{d}/D.pt", "--disc-arch", "tiny_arch:critic", "--disc-output", "logit"],
            "name --out FILE.safetensors",
        ),
        (
            ["--data", "grid25", "--disc", "{d}/D.pt", "--disc-arch", "tiny_arch:critic", "--disc-output", "logit"]
            + ["--calibration", "isotonic"],
            "use --calibration logistic or none",
        ),
        (["--data", "grid25", "--patience", "-1"], "--patience must be >= 0"),
        (
            ["--data", "grid25", "--disc", "{d}/D.pt", "--disc-arch", "tiny_arch:critic", "--disc-output", "logit"]
            + ["--kind", "feature-sp"],
            "--disc is fine-tuned by --kind discriminator",
        ),
    ],
)
def test_fit_ratio_foreign_errors(files, tmp_path, extra, needle):
    d = files.dir
    ratio = tmp_path / "ratio.pt"
    res = invoke(
        "fit-ratio",
        "--ckpt",
        d / "G.pt",
        "--arch",
        "tiny_arch:generator",
        "--latent-shape",
        2,
        *[str(a).format(d=d) for a in extra],
        "--out",
        ratio,
        "--no-progress",
        "--device",
        "cpu",
    )
    assert res.exit_code == 2 and needle in res.output, res.output
    assert not ratio.exists()


def _fit_foreign_disc(files, tmp_path, out, *extra):
    d = files.dir
    gen = ["--ckpt", d / "G.pt", "--arch", "tiny_arch:generator", "--latent-shape", 2]
    res = invoke(
        "fit-ratio",
        *gen,
        "--data",
        "grid25",
        *extra,
        "--epochs",
        6,
        "--patience",
        2,
        "--n-val",
        512,
        "--n-train",
        2048,
        "--batch-size",
        256,
        "--calibration",
        "logistic",
        "--n-calib",
        512,
        "--out",
        out,
        "--no-progress",
        "--device",
        "cpu",
    )
    return gen, res


def test_fit_ratio_fine_tunes_a_foreign_discriminator_of_the_users_architecture(files, tmp_path):
    """DRS's protocol for a foreign pair: a copy of the user's critic trained on with the logistic loss
    (held-out early stopping), calibrated, saved as its weights with the flags that use them."""
    d = files.dir
    before = (d / "D.pt").read_bytes()
    out = tmp_path / "ft.safetensors"
    disc = ["--disc", d / "D.pt", "--disc-arch", "tiny_arch:critic", "--disc-output", "critic"]
    gen, res = _fit_foreign_disc(files, tmp_path, out, *disc)
    assert res.exit_code == 0, res.output
    assert "fitted the foreign discriminator" in res.output and (d / "D.pt").read_bytes() == before
    meta = json.loads(out.with_name(out.name + ".json").read_text())
    assert meta["output"] == "logit" and meta["calibration"]["after"]["log_loss"] > 0
    assert 1 <= meta["epochs_run"] <= 6 and 1 <= meta["best_epoch"] <= meta["epochs_run"] and meta["fit_time_s"] > 0
    assert all("val_loss" in h for h in meta["history"])
    tuned = safetensors.torch.load_file(str(out))
    assert set(tuned) == set(files.D.state_dict()) and any(
        not torch.equal(tuned[k], v) for k, v in files.D.state_dict().items()
    )
    flags = meta["use_with"].replace("'", "").split()
    assert flags[:2] == ["--disc", str(out)] and "--disc-temperature" in flags
    res, out_dir = sample_cli(tmp_path, *gen, *flags, "-m", "sir", "-o", "candidates=4", "-n", 16)
    assert res.exit_code == 0, res.output
    assert load_x(out_dir).shape == (16, 2)


def test_fit_ratio_fine_tunes_a_foreign_discriminator_of_a_refine_architecture(files, tmp_path):
    """With a refine architecture the result is an ordinary ratio file: a critic fine-tuned this way is a logit."""
    torch.manual_seed(1)
    net = refine.nets.build("mlp", in_dim=2, out_dim=1, hidden=8, depth=2)
    torch.save(net.state_dict(), tmp_path / "mlp_critic.pt")
    out = tmp_path / "ratio.safetensors"
    kw = json.dumps({"in_dim": 2, "out_dim": 1, "hidden": 8, "depth": 2})
    disc = [
        "--disc",
        tmp_path / "mlp_critic.pt",
        "--disc-arch",
        "mlp",
        "--disc-arch-kwargs",
        kw,
        "--disc-output",
        "critic",
    ]
    _, res = _fit_foreign_disc(files, tmp_path, out, *disc)
    assert res.exit_code == 0, res.output
    ratio = refine.load_ratio(out)
    assert ratio.output == "logit" and ratio.calibration is not None
    assert torch.isfinite(ratio.log_ratio(torch.randn(8, 2))).all()


IMAGE_ARCH = """
import torch
from torch import nn


def generator():  # z (B, 4) -> images (B, 1, 8, 8) in [-1, 1]
    return nn.Sequential(nn.Linear(4, 64), nn.Tanh(), nn.Unflatten(1, (1, 8, 8)))


def discriminator():  # a probability, shape (B,)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 1), nn.Flatten(0), nn.Sigmoid())
"""


def test_fit_ratio_fine_tunes_a_foreign_image_discriminator_beside_a_foreign_generator(tmp_path):
    """An image pair trained elsewhere: the generator through --arch, its probability discriminator through
    --disc; fit-ratio fine-tunes a copy on the images and prints the flags that sample with it."""
    from PIL import Image

    (tmp_path / "img_arch.py").write_text(IMAGE_ARCH)
    spec = importlib.util.spec_from_file_location("img_arch", tmp_path / "img_arch.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    torch.manual_seed(0)
    torch.save(mod.generator().state_dict(), tmp_path / "G.pt")
    torch.save(mod.discriminator().state_dict(), tmp_path / "D.pt")
    rng = np.random.default_rng(0)
    for i in range(160):  # bright blobs on a dark ground: easy to tell from the untrained generator
        a = (rng.random((8, 8)) * 40).astype(np.uint8)
        a[2:6, 2:6] = 220
        (tmp_path / "imgs").mkdir(exist_ok=True)
        Image.fromarray(a, mode="L").save(tmp_path / "imgs" / f"{i}.png")
    arch = str(tmp_path / "img_arch.py")
    gen = ["--ckpt", tmp_path / "G.pt", "--arch", f"{arch}:generator", "--latent-shape", 4, "--output-range", "[-1,1]"]
    disc = ["--disc", tmp_path / "D.pt", "--disc-arch", f"{arch}:discriminator", "--disc-output", "prob"]
    common = ["--data", f"folder:{tmp_path / 'imgs'}", "--epochs", 3, "--batch-size", 16, "--seed", 0]
    common += ["--no-progress", "--device", "cpu"]
    res = invoke("fit-ratio", *gen, *common, "--out", tmp_path / "none.safetensors")
    assert res.exit_code == 2 and "--disc" in res.output and not (tmp_path / "none.safetensors").exists()
    out = tmp_path / "tuned.safetensors"
    res = invoke(
        "fit-ratio", *gen, *disc, *common, "--patience", 2, "--n-val", 32, "--lr", 1e-3, "--calibration", "logistic", "--n-calib", 32,
        "--out", out,
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    meta = json.loads(out.with_name(out.name + ".json").read_text())
    assert meta["output"] == "prob" and meta["n_train"] == 160 - 32 - 32 and 1 <= meta["epochs_run"] <= 3
    flags = meta["use_with"].replace("'", "").split()
    res, out_dir = sample_cli(tmp_path, *gen, *flags, "-m", "sir", "-o", "candidates=4", "-n", 8)
    assert res.exit_code == 0, res.output
    assert load_x(out_dir).shape == (8, 1, 8, 8)


def test_a_probability_output_is_fine_tuned_through_its_logit():
    from refine.cli.fit_foreign import _AsLogit

    lin = nn.Linear(2, 1)
    prob = nn.Sequential(lin, nn.Sigmoid())
    x = torch.randn(16, 2)
    torch.testing.assert_close(_AsLogit(prob, "prob")(x), lin(x), rtol=1e-4, atol=1e-4)
    assert torch.equal(_AsLogit(lin, "critic")(x), lin(x)) and torch.equal(_AsLogit(lin, "logit")(x), lin(x))


def test_torchscript_route(files, tmp_path):
    d = files.dir
    res, out = sample_cli(
        tmp_path,
        "--ckpt",
        d / "G.ts",
        "--latent-shape",
        2,
        "--disc",
        d / "D.ts",
        "--disc-output",
        "logit",
        "-m",
        "sir",
        "-o",
        "candidates=4",
        "-n",
        40,
        "--trust-code",
    )
    assert res.exit_code == 0, res.output
    assert torch.allclose(load_x(out), api_result(files.G, files.D, "sir", 40, candidates=4), atol=1e-6)
    assert json.loads((out / "run.json").read_text())["inputs"]["checkpoint"]["format"] == "torchscript"


def test_export_route_reads_the_latent_shape_and_chunks_a_fixed_batch(files, tmp_path):
    d = files.dir
    # G16.pt2 was exported for batches of exactly 16; 50 is not a multiple of 16
    res, out = sample_cli(
        tmp_path,
        "--ckpt",
        d / "G16.pt2",
        "--disc",
        d / "D.pt2",
        "--disc-output",
        "logit",
        "-m",
        "sir",
        "-o",
        "candidates=3",
        "-n",
        50,
        "--trust-code",
    )
    assert res.exit_code == 0, res.output
    assert torch.allclose(load_x(out), api_result(files.G, files.D, "sir", 50, candidates=3), atol=1e-6)
    ck = json.loads((out / "run.json").read_text())["inputs"]["checkpoint"]
    assert ck["format"] == "export" and ck["fixed_batch"] == 16 and ck["prior"]["shape"] == [2]
    res, out = sample_cli(tmp_path, "--ckpt", d / "G16.pt2", "--latent-shape", 3, "-n", 8, "--trust-code")
    assert res.exit_code == 2 and "takes latents of shape (N, 2)" in res.output


def test_fixed_batch_adapter_keeps_values_and_gradients(files):
    ep = torch.export.export(files.G, (torch.randn(16, 2),))
    net = FixedBatch(ep.module(), 16)
    z = torch.randn(37, 2, requires_grad=True)
    (g1,) = torch.autograd.grad(net(z).sum(), z)
    z2 = z.detach().clone().requires_grad_(True)
    (g2,) = torch.autograd.grad(files.G(z2).sum(), z2)
    assert torch.allclose(net(z), files.G(z), atol=1e-6) and torch.allclose(g1, g2, atol=1e-6)


def test_whole_module_pickle_is_refused_unless_allowed(files, tmp_path):
    d = files.dir
    res, out = sample_cli(tmp_path, "--ckpt", d / "whole.pt", "--latent-shape", 2, "-n", 10)
    assert res.exit_code == 2 and "--trust-code" in res.output and "Traceback" not in res.output
    assert not (out / "samples.npz").exists()
    for flag in ("--trust-code", "--allow-pickle"):  # the old spelling of the opt-in still works
        res, out = sample_cli(tmp_path, "--ckpt", d / "whole.pt", "--latent-shape", 2, "-n", 10, flag)
        assert res.exit_code == 0, res.output
        assert json.loads((out / "run.json").read_text())["inputs"]["checkpoint"]["format"] == "pickle"


def test_state_key_and_dataparallel_prefix(files, tmp_path):
    d = files.dir
    res, _ = sample_cli(
        tmp_path, "--ckpt", d / "both.pt", "--arch", "tiny_arch:generator", "--latent-shape", 2, "-n", 10
    )
    assert res.exit_code == 2 and "netG, netD" in res.output and "--state-key" in res.output
    res, out = sample_cli(
        tmp_path,
        "--ckpt",
        d / "both.pt",
        "--arch",
        "tiny_arch:generator",
        "--state-key",
        "netG",
        "--latent-shape",
        2,
        "-n",
        10,
    )
    assert res.exit_code == 0, res.output
    loaded = load_network(d / "dp.pt", arch=files.mod.generator)
    assert "module." in loaded.provenance["notes"][0]
    z = torch.randn(5, 2)
    assert torch.equal(loaded.net(z), files.G(z))


def test_python_loaders(files):
    d = files.dir
    gen = load_generator(d / "G.pt", arch=files.mod.generator, latent_shape=2)
    ratio = load_discriminator(d / "D.pt2", output="logit", trust_code=True)
    target = refine.LatentTarget(gen, ratio)
    x = refine.sample(target, "sir", n=20, rng=torch.Generator().manual_seed(0), candidates=3).x
    assert torch.allclose(x, api_result(files.G, files.D, "sir", 20, candidates=3), atol=1e-6)
    assert not any(p.requires_grad for p in gen.net.parameters())


def test_detect_format(files):
    d = files.dir
    kinds = {
        "G.pt": "state_dict",
        "G.safetensors": "safetensors",
        "G.ts": "torchscript",
        "G16.pt2": "export",
        "whole.pt": "pickle",
        "refine.pt": "refine",
        "tiny_arch.py": "unknown",
    }
    assert {name: detect_format(d / name) for name in kinds} == kinds


# --------------------------------------------------------------------------- mismatches: one line each
@pytest.mark.parametrize(
    "args,needle",
    [
        (
            ["--ckpt", "{d}/G.pt", "--arch", "tiny_arch:generator", "--latent-shape", "3"],
            "its first layer is Linear(in_features=2)",
        ),
        (
            [
                "--ckpt",
                "{d}/G.pt",
                "--arch",
                "tiny_arch:generator",
                "--latent-shape",
                "2",
                "--disc",
                "{d}/D3.pt",
                "--disc-arch",
                "tiny_arch:critic3",
                "--disc-output",
                "logit",
                "-m",
                "sir",
            ],
            "does not take the generator's samples of shape (N, 2)",
        ),
        (
            [
                "--ckpt",
                "{d}/G.pt",
                "--arch",
                "tiny_arch:generator",
                "--latent-shape",
                "2",
                "--disc",
                "{d}/D2out.pt",
                "--disc-arch",
                "tiny_arch:two_scores",
                "--disc-output",
                "logit",
                "-m",
                "sir",
            ],
            "expected (2,) or (2, 1)",
        ),
        (["--ckpt", "{d}/img.ts", "--latent-shape", "4", "--trust-code"], "no output range was declared"),
        (["--ckpt", "{d}/G.pt", "--latent-shape", "2"], "pass --arch package.module:factory"),
        (
            [
                "--ckpt",
                "{d}/G.pt",
                "--arch",
                "tiny_arch:generator",
                "--latent-shape",
                "2",
                "--disc",
                "{d}/D.pt",
                "--disc-arch",
                "tiny_arch:critic",
            ],
            "--disc-output",
        ),
        (["--ckpt", "{d}/G.ts", "--latent-shape", "2", "--disc-output", "logit"], "pass its file with --disc"),
        (
            [
                "--ckpt",
                "{d}/G.ts",
                "--latent-shape",
                "2",
                "--disc",
                "{d}/D.ts",
                "--disc-output",
                "logit",
                "--ratio",
                "{d}/D.pt",
            ],
            "pass one of them",
        ),
        (["--ckpt", "{d}/G.ts", "--latent-shape", "2"], "carries code"),
        (["--ckpt", "{d}/G16.pt2"], "carries code"),
        (["--ckpt", "{d}/G.safetensors", "--latent-shape", "2"], "pass --arch package.module:factory"),
        (
            [
                "--ckpt",
                "{d}/G.pt",
                "--arch",
                "tiny_arch:generator",
                "--arch-kwargs",
                '{{"h": 4}}',
                "--latent-shape",
                "2",
            ],
            "[8, 2] in the file but [4, 2]",
        ),
        (
            ["--ckpt", "{d}/G.pt", "--arch", "tiny_arch:generator", "--arch-kwargs", "{{h: 4}}", "--latent-shape", "2"],
            "is not JSON",
        ),
        (
            [
                "--ckpt",
                "{d}/G.pt",
                "--arch",
                "tiny_arch:generator",
                "--arch-kwargs",
                '{{"width": 4}}',
                "--latent-shape",
                "2",
            ],
            "does not take",
        ),
        (["--ckpt", "{d}/G.pt", "--arch", "tiny_arch:nope", "--latent-shape", "2"], "has no attribute 'nope'"),
        (["--ckpt", "{d}/G.ts", "--trust-code"], "pass --latent-shape"),
        (["--ckpt", "{d}/G.ts", "--latent-shape", "2", "--output-range", "0..1", "--trust-code"], "valid ranges"),
        (["--ckpt", "{d}/G.ts", "--arch", "tiny_arch:generator", "--latent-shape", "2"], "holds its own architecture"),
        (["--ckpt", "{d}/refine.pt", "--latent-shape", "2"], "drop --latent-shape"),
        (["--ckpt", "{d}/refine.pt", "--arch", "tiny_arch:generator"], "drop --arch"),
        (["--arch", "tiny_arch:generator", "--latent-shape", "2"], "pass its file with --ckpt"),
        (["--ckpt", "{d}/tiny_arch.py", "--latent-shape", "2"], "not a file written by torch.save"),
    ],
)
def test_mismatch_is_one_line_and_writes_nothing(files, tmp_path, args, needle):
    res, out = sample_cli(tmp_path, *[a.format(d=files.dir) for a in args], "-n", 16)
    assert res.exit_code == 2, res.output
    assert needle in res.output, res.output
    assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1
    assert not (out / "samples.npz").exists()


@dataclass(frozen=True)
class _GradProbe(Sampler):
    """A minimal gradient method: one call of value_and_grad (latent space)."""

    needs_gradients: typing.ClassVar[bool] = True
    name: typing.ClassVar[str] = "gradprobe"

    def sample(self, target, n, *, rng=None, progress=False, real=None):
        z = target.prior.sample(n, rng=rng, device=target.device)
        _, g, x = target.value_and_grad(z)
        return SampleResult(x, z, {"method": self.name, "n": n, "g_evals_per_sample": 1.0})


@dataclass(frozen=True)
class _DataGradProbe(_GradProbe):
    """A minimal data-space gradient method: differentiates the ratio at x = G(z) only."""

    name: typing.ClassVar[str] = "datagradprobe"
    moves_in_data_space: typing.ClassVar[bool] = True  # declared on the class: the checks follow it

    def sample(self, target, n, *, rng=None, progress=False, real=None):
        z = target.prior.sample(n, rng=rng, device=target.device)
        with torch.no_grad():
            x = target.generator(z)
        x.requires_grad_(True)
        torch.autograd.grad(target.log_ratio(x).sum(), x)
        return SampleResult(x.detach(), z, {"method": self.name, "n": n, "g_evals_per_sample": 1.0})


@pytest.mark.parametrize("gen", ["Gng.ts", "Gng.pt2"])
def test_non_differentiable_generator_with_a_gradient_method(files, tmp_path, monkeypatch, gen):
    monkeypatch.setitem(SAMPLERS, "gradprobe", _GradProbe)
    d = files.dir
    common = ["--latent-shape", "2", "--disc", d / "D.ts", "--disc-output", "logit", "-n", 8, "--trust-code"]
    res, out = sample_cli(tmp_path, "--ckpt", d / gen, *common, "-m", "gradprobe")
    assert (
        res.exit_code == 2
        and "no gradient flows from the output of generator" in res.output
        and "gradprobe" in res.output
    ), res.output
    assert not (out / "samples.npz").exists()
    res, out = sample_cli(tmp_path, "--ckpt", d / gen, *common, "-m", "sir")  # gradient-free methods run on it
    assert res.exit_code == 0, res.output
    res, out = sample_cli(
        tmp_path, "--ckpt", d / "G.ts", *common, "-m", "gradprobe"
    )  # a differentiable TorchScript passes
    assert res.exit_code == 0, res.output


def test_eval_checks_gradients_per_method(files, monkeypatch):
    monkeypatch.setitem(SAMPLERS, "gradprobe", _GradProbe)
    monkeypatch.setitem(SAMPLERS, "datagradprobe", _DataGradProbe)
    d = files.dir
    common = [
        "eval",
        "--ckpt",
        d / "Gng.pt2",
        "--disc",
        d / "D.ts",
        "--disc-output",
        "logit",
        "--data",
        "grid25",
        "-n",
        20,
        "--no-progress",
        "--device",
        "cpu",
        "--trust-code",
    ]
    res = invoke(*common, "--methods", "none,datagradprobe")
    assert res.exit_code == 0, res.output
    res = invoke(*common, "--methods", "none,gradprobe")
    assert res.exit_code == 2 and "method gradprobe needs gradients" in res.output, res.output


def test_data_space_methods_need_gradients_through_the_ratio_only(files):
    d = files.dir
    gen = load_generator(d / "Gng.ts", latent_shape=2, trust_code=True)
    ratio = load_discriminator(d / "D.pt2", output="logit", trust_code=True)
    with pytest.raises(NotDifferentiableError, match="generator"):
        check_gradients(gen, ratio, method="gradprobe")
    check_gradients(gen, ratio, method="datagradprobe", through_generator=False)
    nograd_ratio = refine.DiscriminatorRatio(files.mod.NoGrad(files.D), "logit")
    with pytest.raises(NotDifferentiableError, match="discriminator"):
        check_gradients(gen, nograd_ratio, method="datagradprobe", through_generator=False)


# --------------------------------------------------------------------------- files that would run code
class _Touch:
    """Unpickling this creates a file: the payload of a malicious checkpoint."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.path),))


def _malicious(kind, path, marker):
    if kind == "torch.save":
        torch.save({"layers.0.weight": torch.zeros(8, 2), "hook": _Touch(marker)}, path)
    elif kind == "pickle":
        with open(path, "wb") as f:
            pickle.dump(_Touch(marker), f)
    elif kind == "module":
        torch.save(_Touch(marker), path)


@pytest.mark.parametrize("kind", ["torch.save", "pickle", "module"])
@pytest.mark.parametrize("route", ["cli", "cli-arch", "python"])
def test_malicious_pickle_is_refused_and_writes_nothing(files, tmp_path, kind, route):
    bad, marker = tmp_path / "bad.pt", tmp_path / "pwned"
    _malicious(kind, bad, marker)
    if route == "python":
        with pytest.raises(CheckpointError, match="trust-code"):
            load_network(bad)
    else:
        extra = ["--arch", "tiny_arch:generator"] if route == "cli-arch" else []
        res, out = sample_cli(tmp_path, "--ckpt", bad, *extra, "--latent-shape", 2, "-n", 8)
        assert res.exit_code == 2 and "--trust-code" in res.output and "Traceback" not in res.output, res.output
        assert not (out / "samples.npz").exists()
        res, _ = sample_cli(
            tmp_path,
            "--ckpt",
            files.dir / "G.pt",
            "--arch",
            "tiny_arch:generator",
            "--latent-shape",
            2,
            "--disc",
            bad,
            "--disc-output",
            "logit",
            "-n",
            8,
        )
        assert res.exit_code == 2 and "--trust-code" in res.output
    assert not marker.exists()
    # the payload is live: unpickling it the unsafe way does create the file
    with open(bad, "rb") as f:
        pickle.load(f) if kind == "pickle" else torch.load(f, weights_only=False)
    assert marker.exists()


def _evil_torchscript(marker, spelling):
    """A TorchScript module whose ``__setstate__`` writes a file inside ``torch.jit.load``.

    ``spelling`` varies how the call is written in the source: the TorchScript parser accepts
    all of them, which is why refine does not try to recognise dangerous code by its text."""
    src = f"""
import torch, typing
from torch import nn

class Evil(nn.Module):
    def __init__(self):
        super().__init__()
        self.path = {str(marker)!r}

    def forward(self, z):
        return z * 2

    @torch.jit.export
    def __getstate__(self):
        return (self.path, self.training)

    @torch.jit.export
    def __setstate__(self, state: typing.Tuple[str, bool]):
        self.path = state[0]
        self.training = state[1]
        {spelling}(torch.zeros(1), self.path)
"""
    ns: dict = {}
    mod_path = marker.parent / f"evil_{abs(hash(spelling))}.py"
    mod_path.write_text(src)
    spec = importlib.util.spec_from_file_location(mod_path.stem, mod_path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    ns["Evil"] = mod.Evil
    return torch.jit.script(ns["Evil"]())


@pytest.mark.parametrize("spelling", ["torch.save", "torch . save", "torch.\\\n        save"])
def test_torchscript_is_code_and_is_refused_by_default(tmp_path, spelling):
    marker = tmp_path / "pwned"
    ts = tmp_path / "evil.ts"
    _evil_torchscript(marker, spelling).save(str(ts))
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="carries code"):
        load_network(ts)
    res, out = sample_cli(tmp_path, "--ckpt", ts, "--latent-shape", 2, "-n", 8)
    assert res.exit_code == 2 and "--trust-code" in res.output and "state_dict" in res.output, res.output
    assert not marker.exists() and not (out / "samples.npz").exists()
    torch.jit.load(str(ts))  # the payload is live: loading it the unsafe way runs it
    assert marker.exists()


def test_safetensors_route_matches_the_state_dict_route(files, tmp_path):
    d = files.dir
    res, out = sample_cli(
        tmp_path,
        "--ckpt",
        d / "G.safetensors",
        "--arch",
        "tiny_arch:generator",
        "--latent-shape",
        2,
        "--disc",
        d / "D.pt",
        "--disc-arch",
        "tiny_arch:critic",
        "--disc-output",
        "logit",
        "-m",
        "sir",
        "-o",
        "candidates=4",
        "-n",
        40,
    )
    assert res.exit_code == 0, res.output
    assert torch.equal(load_x(out), api_result(files.G, files.D, "sir", 40, candidates=4))
    ck = json.loads((out / "run.json").read_text())["inputs"]["checkpoint"]
    assert (
        ck["format"] == "safetensors" and ck["sha256"] == hashlib.sha256((d / "G.safetensors").read_bytes()).hexdigest()
    )
    res, out = sample_cli(
        tmp_path,
        "--ckpt",
        d / "G.safetensors",
        "--arch",
        "tiny_arch:generator",
        "--arch-kwargs",
        '{"h": 4}',
        "--latent-shape",
        2,
        "-n",
        8,
    )
    assert res.exit_code == 2 and "[8, 2] in the file but [4, 2]" in res.output, res.output


def test_an_architecture_larger_than_memory_is_refused_before_it_is_built(files, tmp_path):
    d = files.dir
    res, out = sample_cli(
        tmp_path,
        "--ckpt",
        d / "G.pt",
        "--arch",
        "tiny_arch:generator",
        "--arch-kwargs",
        '{"h": 10000000000}',
        "--latent-shape",
        2,
        "-n",
        8,
    )
    assert res.exit_code == 2 and "more than fits in memory" in res.output, res.output
    assert not (out / "samples.npz").exists()


@pytest.mark.parametrize("route", ["cli", "python"])
def test_export_program_is_code_and_is_refused_by_default(files, tmp_path, route):
    marker = tmp_path / "pwned"
    buf = io.BytesIO()
    torch.export.save(
        torch.export.export(files.G, (torch.randn(4, 2),), dynamic_shapes=({0: torch.export.Dim("b")},)), buf
    )
    pick = io.BytesIO()
    torch.save(_Touch(marker), pick)
    zin, out_buf = zipfile.ZipFile(io.BytesIO(buf.getvalue())), io.BytesIO()
    with zipfile.ZipFile(out_buf, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            zout.writestr(
                info, pick.getvalue() if info.filename.endswith("sample_inputs/model.pt") else zin.read(info.filename)
            )
    path = tmp_path / "evil.pt2"
    path.write_bytes(out_buf.getvalue())
    if route == "python":
        with pytest.raises(CheckpointError, match="carries code"):
            load_network(path)
    else:
        res, out = sample_cli(tmp_path, "--ckpt", path, "-n", 8)
        assert res.exit_code == 2 and "--trust-code" in res.output, res.output
    assert not marker.exists()
    try:  # the payload is live: torch.export.load runs it
        torch.export.load(io.BytesIO(out_buf.getvalue()))
    except Exception:  # noqa: BLE001 - a broken program may fail after running the payload
        pass
    assert marker.exists()
