"""The table of bad inputs: every mistake a user can make is answered by one clear line.

CLI cases run in-process (``typer.testing.CliRunner`` on ``refine.cli.app``) and must exit with
code 2, print exactly one non-empty line, ``error: ...``, matching the case's pattern, show no
traceback, and leave the file system as it was: no output file, no temporary file, no new
folder, no input touched. A pickle payload must not run.

API cases call the library directly and must raise the stated :class:`refine.errors.RefineError`
subclass with a one-line message matching the pattern, again without writing anything.

To add a case, append a row to ``CLI_CASES`` or ``API_CASES``. ``{name}`` placeholders in a CLI
row are paths from the ``files`` fixture (``{out}``: an output folder that does not exist yet,
``{out_pt}``: a checkpoint path inside it). A row whose ``needs`` names a sampler or training
method that is not registered is skipped.
"""

from __future__ import annotations

import errno
import math
import os
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import refine
from refine import errors as E
from refine.cli import app
from refine.generator import LatentGenerator, NormalPrior, UniformPrior
from refine.io import load_gan, load_ratio, save_discriminator_ratio, save_gan
from refine.nets import arch_config, build_from_config
from refine.ratio import DiscriminatorRatio, FunctionRatio, calibrate
from refine.samplers import SAMPLERS, get_sampler
from refine.target import LatentTarget
from refine.train import METHODS
from refine.train.checkpointing import read_training_state
from refine.train.loop import fit
from refine.train.toy2d import train_toy

G_ARCH = arch_config("mlp", in_dim=2, out_dim=2, hidden=8, depth=1)
D_ARCH = arch_config("mlp", in_dim=2, out_dim=1, hidden=8, depth=1)
NO_CUDA = not torch.cuda.is_available()


class Payload:
    """Unpickling this calls ``Path.touch(marker)``: it proves whether a loader ran pickled code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _nets(seed=0, g_arch=G_ARCH, d_arch=D_ARCH):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_from_config(g_arch), build_from_config(d_arch)


def _save(path, g, d, *, g_arch=G_ARCH, d_arch=D_ARCH, prior=None, meta=None):
    save_gan(
        path,
        generator=g,
        generator_arch=g_arch,
        prior=prior or NormalPrior((2,)),
        discriminator=d,
        discriminator_arch=d_arch,
        meta={"dataset": "grid25"} if meta is None else meta,
    )


def _unwritable_dir(root: Path) -> Path | None:
    """A folder path that cannot be created or written: a read-only folder, or under /proc when running as root."""
    if os.geteuid() != 0:
        ro = root / "read-only"
        ro.mkdir()
        ro.chmod(0o500)
        return ro / "out"
    cand = Path("/proc/refine-cannot-write/out")
    try:
        cand.mkdir(parents=True)
    except OSError:
        return cand
    return None


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Every bad (and a few good) input file, written once."""
    root = tmp_path_factory.mktemp("inputs")
    p = {"root": root, "missing": root / "no-such-file.pt", "marker": root / "PAYLOAD-RAN"}
    g, d = _nets()
    _save(root / "gan.pt", g, d)
    p["gan"] = root / "gan.pt"
    _save(root / "gan_nod.pt", g, None)
    p["gan_nod"] = root / "gan_nod.pt"
    _save(root / "gan_nometa.pt", g, d, meta={})
    p["gan_nometa"] = root / "gan_nometa.pt"
    save_discriminator_ratio(root / "ratio.pt", DiscriminatorRatio(d), D_ARCH)
    p["ratio"] = root / "ratio.pt"

    raw = p["gan"].read_bytes()
    for name, data in {
        "empty.pt": b"",
        "truncated.pt": raw[: len(raw) // 2],
        "random.pt": bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)),
        "zipjunk.pt": b"PK\x03\x04" + bytes(np.random.default_rng(1).integers(0, 256, 2048, dtype=np.uint8)),
        "text.pt": b"this is not a checkpoint\n",
        "samples_text.npz": b"x,y\n1,2\n",
    }.items():
        (root / name).write_bytes(data)
        p[name.split(".")[0]] = root / name
    torch.save({"weights": torch.zeros(3), "note": "no format key"}, root / "dict.pt")
    p["dict"] = root / "dict.pt"
    torch.save({"format": "refine.gan", "payload": Payload(p["marker"])}, root / "payload.pt")
    p["payload"] = root / "payload.pt"
    torch.save(nn.Linear(2, 2), root / "module.pt")
    p["module"] = root / "module.pt"

    ckpt = torch.load(p["gan"], weights_only=True)
    for name, edit in {
        "v2": lambda c: c.update(version=2),
        "badarch": lambda c: c["generator"].update(arch={"name": "no-such-arch", "kwargs": {}}),
        "badweights": lambda c: c["generator"].update(
            state=_nets(0, arch_config("mlp", in_dim=2, out_dim=2, hidden=16, depth=1))[0].state_dict()
        ),
        "latent3": lambda c: c["generator"].update(prior={"name": "normal", "shape": [3]}),
    }.items():
        c = torch.load(p["gan"], weights_only=True)
        edit(c)
        torch.save(c, root / f"{name}.pt")
        p[name] = root / f"{name}.pt"
    del ckpt

    d3 = build_from_config(arch_config("mlp", in_dim=3, out_dim=1, hidden=8, depth=1))
    save_discriminator_ratio(
        root / "ratio_dim3.pt", DiscriminatorRatio(d3), arch_config("mlp", in_dim=3, out_dim=1, hidden=8, depth=1)
    )
    p["ratio_dim3"] = root / "ratio_dim3.pt"
    for name, value in {"ratio_nan": math.nan, "ratio_inf": math.inf}.items():
        dd = _nets()[1]
        with torch.no_grad():
            dd.layers[-1].bias.fill_(value)
        save_discriminator_ratio(root / f"{name}.pt", DiscriminatorRatio(dd), D_ARCH)
        p[name] = root / f"{name}.pt"
    peaky = build_from_config(arch_config("mlp", in_dim=2, out_dim=1, hidden=8, depth=1, activation="elu"))
    with torch.no_grad():  # log r = 1000 * x_0: a handful of proposals hold almost all the mass
        for layer in peaky.layers:
            layer.weight.zero_()
            layer.bias.zero_()
        peaky.layers[0].weight[0, 0] = 1.0
        peaky.layers[1].weight[0, 0] = 1000.0
    save_discriminator_ratio(
        root / "ratio_peaky.pt",
        DiscriminatorRatio(peaky),
        arch_config("mlp", in_dim=2, out_dim=1, hidden=8, depth=1, activation="elu"),
    )
    p["ratio_peaky"] = root / "ratio_peaky.pt"
    real = torch.randn(400, 2, generator=torch.Generator().manual_seed(0))
    fake = torch.randn(400, 2, generator=torch.Generator().manual_seed(1)) + 0.5
    iso, _ = calibrate(DiscriminatorRatio(d), real, fake, "isotonic", rng=torch.Generator().manual_seed(2))
    save_discriminator_ratio(root / "ratio_isotonic.pt", iso, D_ARCH)
    p["ratio_isotonic"] = root / "ratio_isotonic.pt"
    torch.save(g.state_dict(), root / "state_dict.pt")
    p["state_dict"] = root / "state_dict.pt"

    np.savez(root / "samples_nox.npz", y=np.zeros((4, 2), np.float32))
    p["samples_nox"] = root / "samples_nox.npz"
    np.savez(root / "samples_obj.npz", x=np.array([Payload(p["marker"])], dtype=object))
    p["samples_obj"] = root / "samples_obj.npz"
    (root / "occupied").write_text("a file where a folder is expected\n")
    p["a_file"] = root / "occupied"
    (root / "empty_dir").mkdir()
    p["empty_dir"] = root / "empty_dir"
    (root / "a_dir").mkdir()
    p["a_dir"] = root / "a_dir"

    res = CliRunner().invoke(
        app,
        [
            "train",
            "--epochs",
            "1",
            "--n-train",
            "512",
            "--batch-size",
            "128",
            "--hidden",
            "8",
            "--device",
            "cpu",
            "--no-progress",
            "--out",
            str(root / "trained.pt"),
        ],
    )
    assert res.exit_code == 0, res.output
    p["trained"] = root / "trained.pt"
    p["unwritable"] = _unwritable_dir(root)
    yield p
    assert not p["marker"].exists(), "a pickle payload ran"


def _snapshot(*folders: Path) -> dict:
    """Every file and folder below ``folders`` (hidden ones included) with its size and modification time."""
    snap = {}
    for top in folders:
        for dirpath, dirnames, filenames in os.walk(top):
            for name in dirnames + filenames:
                full = Path(dirpath) / name
                st = full.lstat()
                snap[str(full)] = (st.st_size if full.is_file() else -1, st.st_mtime_ns)
    return snap


def _needs(names) -> None:
    missing = [n for n in names if n not in SAMPLERS and n not in METHODS]
    if missing:
        pytest.skip(f"not registered: {', '.join(missing)}")


# ============================================================================= the CLI table
@dataclass(frozen=True)
class Cli:
    id: str
    argv: str
    match: str
    needs: tuple[str, ...] = ()
    env: dict = field(default_factory=dict)
    when: str = ""  # "no-cuda" or "unwritable": run only where the condition can be produced


S = "sample --no-progress --device cpu --out {out}"
S2 = S + " --ckpt {gan} --ratio {ratio} -n 50"
T = "train --no-progress --device cpu --n-train 512 --batch-size 128 --hidden 8 --epochs 1 --out {out_pt}"
F = "fit-ratio --no-progress --device cpu --out {out_pt}"
TC = "train-classifier --device cpu --out {out_pt}"
EV = "eval --no-progress --device cpu --out {out}"

CLI_CASES = [
    # --- checkpoints: missing, empty, truncated, corrupt, wrong format, unsafe
    Cli("ckpt-missing", S + " --ckpt {missing}", r"does not exist"),
    Cli("ckpt-empty", S + " --ckpt {empty}", r"is empty"),
    Cli("ckpt-directory", S + " --ckpt {a_dir}", r"is a directory"),
    Cli("ckpt-truncated", S + " --ckpt {truncated}", r"truncated|corrupt"),
    Cli("ckpt-random-bytes", S + " --ckpt {random}", r"not a valid torch file|corrupt|not a file written by torch"),
    Cli("ckpt-zip-garbage", S + " --ckpt {zipjunk}", r"not a valid torch file|corrupt|not a file written by torch"),
    Cli("ckpt-text-file", S + " --ckpt {text}", r"not a file written by torch"),
    Cli("ckpt-random-dict", S + " --ckpt {dict}", r"state_dict|not a refine"),
    Cli("ckpt-pickle-payload", S + " --ckpt {payload}", r"pickle"),
    Cli("ckpt-whole-module-pickle", S + " --ckpt {module}", r"pickle"),
    Cli("ckpt-future-version", S + " --ckpt {v2}", r"version"),
    Cli("ckpt-unknown-architecture", S + " --ckpt {badarch}", r"unknown architecture"),
    Cli("ckpt-weights-do-not-fit", S + " --ckpt {badweights}", r"do not fit"),
    Cli("ckpt-latent-size-mismatch", S + " --ckpt {latent3} -n 10", r"latent|shape"),
    Cli("ckpt-bare-state-dict", S + " --ckpt {state_dict}", r"--arch"),
    Cli(
        "foreign-arch-not-importable",
        S + " --ckpt {state_dict} --arch no_such_pkg.nets:G --latent-shape 2",
        r"cannot import",
    ),
    Cli(
        "foreign-latent-shape-not-numbers",
        S + ' --ckpt {state_dict} --arch mlp --arch-kwargs \'{{"hidden": 8, "depth": 1}}\' --latent-shape abc',
        r"latent-shape",
    ),
    Cli(
        "foreign-disc-without-output",
        S2.replace(" --ratio {ratio}", "") + " -m sir --disc {state_dict}",
        r"disc-output|--disc",
    ),
    # --- ratios and scores
    Cli("ratio-missing", S + " --ckpt {gan} --ratio {missing} -m sir", r"does not exist"),
    Cli("ratio-is-a-gan-checkpoint", S + " --ckpt {gan} --ratio {gan} -m sir", r"not a refine ratio file"),
    Cli("ratio-pickle-payload", S + " --ckpt {gan} --ratio {payload} -m sir", r"pickle"),
    Cli("ratio-input-shape-mismatch", S + " --ckpt {gan} --ratio {ratio_dim3} -m sir -n 10", r"shape"),
    Cli("scores-nan", S + " --ckpt {gan} --ratio {ratio_nan} -m sir -n 10", r"NaN"),
    Cli("scores-inf", S + " --ckpt {gan} --ratio {ratio_inf} -m rs -n 10", r"inf"),
    Cli("no-ratio-at-all", S + " --ckpt {gan_nod} -m drs", r"no discriminator"),
    Cli(
        "gradient-method-non-differentiable-ratio",
        S + " --ckpt {gan} --ratio {ratio_isotonic} -m ddls -n 10",
        r"differentiable",
        needs=("ddls",),
    ),
    # --- sample counts, methods and options
    Cli("n-zero", S2 + " -n 0", r"positive"),
    Cli("n-negative", S2 + " -n -5", r"positive"),
    Cli("method-unknown", S2 + " -m bogus", r"unknown method 'bogus'.*valid"),
    Cli("option-unknown", S2 + " -m drs -o gamm=80", r"unknown option.*gamm.*valid options"),
    Cli("option-not-key-value", S2 + " -m drs -o gamma", r"key=value"),
    Cli("option-wrong-type", S2 + " -m drs -o gamma=high", r"expected float"),
    Cli("drs-gamma-above-100", S2 + " -m drs -o gamma=150", r"gamma.*\[0, 100\]"),
    Cli("drs-gamma-negative", S2 + " -m drs -o gamma=-1", r"gamma.*\[0, 100\]"),
    Cli("drs-gamma-nan", S2 + " -m drs -o gamma=nan", r"gamma"),
    Cli("mh-k-zero", S2 + " -m mh -o k=0", r"k .*>= 1"),
    Cli("sir-candidates-zero", S2 + " -m sir -o candidates=0", r"candidates must be >= 1"),
    Cli("rs-budget-zero", S2 + " -m rs -o budget=0", r"budget must be > 0"),
    Cli("rs-budget-infinite", S2 + " -m rs -o budget=inf", r"budget must be > 0"),
    Cli("rs-batch-size-zero", S2 + " -m rs -o batch_size=0", r"batch_size must be > 0"),
    Cli("rs-burn-in-negative", S2 + " -m rs -o burn_in=-3", r"burn_in must be > 0"),
    Cli("ddls-step-size-zero", S2 + " -m ddls -o step_size=0", r"step_size", needs=("ddls",)),
    Cli("dcd-step-size-negative", S2 + " -m dcd -o step_size=-0.1", r"step_size", needs=("dcd",)),
    Cli("dgflow-step-size-zero", S2 + " -m dgflow -o step_size=0", r"step_size", needs=("dgflow",)),
    Cli("dot-step-size-zero", S2 + " -m dot -o step_size=0", r"step_size", needs=("dot",)),
    Cli("ddls-steps-zero", S2 + " -m ddls -o steps=0", r"steps", needs=("ddls",)),
    Cli(
        "rs-proposal-budget-exhausted",
        S + " --ckpt {gan} --ratio {ratio_peaky} -m rs -n 100 -o budget=2 -o burn_in=64 -o batch_size=64",
        r"rs: \d+ of 100 samples after \d+ proposals.*raise -o budget",
    ),
    Cli("mh-init-unknown", S2 + " -m mh -o init=sideways", r"expected one of generated, real"),
    Cli("drs-eps-zero", S2 + " -m drs -o eps=0", r"eps must be > 0"),
    Cli("ddls-noise-scale-negative", S2 + " -m ddls -o noise_scale=-1", r"noise_scale", needs=("ddls",)),
    Cli("ddls-mala-not-a-bool", S2 + " -m ddls -o mala=maybe", r"expected bool", needs=("ddls",)),
    Cli("ddls-temperature-zero", S2 + " -m ddls -o temperature=0", r"temperature", needs=("ddls",)),
    Cli("ddls-decay-zero", S2 + " -m ddls -o decay=0", r"decay", needs=("ddls",)),
    Cli("dgflow-divergence-unknown", S2 + " -m dgflow -o divergence=L2", r"expected one of", needs=("dgflow",)),
    Cli("dot-space-unknown", S2 + " -m dot -o space=pixel", r"expected one of", needs=("dot",)),
    Cli("foreign-flag-on-a-refine-checkpoint", S2 + " --output-range [0,1]", r"refine checkpoint.*drop --output-range"),
    Cli("resume-without-distributed", S2 + " --resume", r"--resume.*--distributed"),
    Cli("distributed-shard-size-zero", S2 + " --distributed --shard-size 0", r"shard size"),
    Cli(
        "mh-init-real-without-data",
        S + " --ckpt {gan_nometa} -m mh -o init=real -n 10",
        r"held-out real samples.*init=generated",
    ),
    # --- seed, device, output location
    Cli("seed-negative", S2 + " --seed -1", r"--seed must be a non-negative integer"),
    Cli("seed-beyond-64-bits", S2 + " --seed 100000000000000000000", r"--seed must be <="),
    Cli("seed-2-to-the-64-minus-1", S2 + " --seed 18446744073709551615", r"--seed must be <="),
    Cli("n-beyond-any-run", S2.replace(" -n 50", "") + " -n 1000000000000000000", r"-n must be <="),
    Cli("n-beyond-the-disk", S2.replace(" -n 50", "") + " -n 1000000000000", r"on disk"),
    Cli("sir-candidates-absurd", S2 + " -m sir -o candidates=1000000000000", r"generator passes per sample"),
    Cli("mh-k-absurd", S2 + " -m mh -o k=1000000000000", r"generator passes per sample"),
    Cli("n-not-a-number", S2.replace(" -n 50", "") + " -n many", r"Invalid value for '-n'"),
    Cli("unknown-flag", S2 + " --no-such-flag", r"No such option"),
    Cli("device-cuda-without-gpu", S2 + " --device cuda", r"no CUDA GPU", when="no-cuda"),
    Cli("device-not-a-device", S2 + " --device gpu0", r"not a device|not supported"),
    Cli("out-is-a-file", S2.replace("--out {out}", "--out {a_file}"), r"exists and is not a folder"),
    Cli("out-below-a-file", S2.replace("--out {out}", "--out {a_file}/sub"), r"not writable|not a folder"),
    Cli("out-unwritable", S2.replace("--out {out}", "--out {unwritable}"), r"not writable", when="unwritable"),
    Cli("no-shipped-checkpoint", S + " -n 10", r"no shipped checkpoints", env={"REFINE_PRETRAINED": "{empty_dir}"}),
    # --- training
    Cli("train-data-unknown", T + " --data grid-26", r"--data|dataset"),
    Cli("train-image-root-empty", T + " --data mnist:{empty_dir}", r"mnist|idx|root|folder"),
    Cli("train-image-root-missing", T + " --data mnist:{missing}", r"not a folder|does not exist"),
    Cli("train-image-root-empty-cifar10", T + " --data cifar10:{empty_dir}", r"cifar"),
    Cli("train-image-spec-without-root", T + " --data mnist:", r"no ROOT"),
    Cli("train-image-dataset-unknown", T + " --data svhn:{empty_dir}", r"--data|dataset"),
    Cli("train-image-size-on-2d-data", T + " --image-size 28", r"image datasets"),
    Cli("train-hidden-zero", T + " --hidden 0", r"positive"),
    Cli("train-epochs-zero", T.replace("--epochs 1", "--epochs 0"), r"positive"),
    Cli("train-method-unknown", T + " -m wgan-gpp", r"unknown training method"),
    Cli("train-option-unknown", T + " -o lrr=0.1", r"unknown option.*lrr.*valid"),
    Cli("train-option-wrong-type", T + " -o lr=fast", r"lr"),
    Cli("train-lr-negative", T + " -o lr=-1", r"lr"),
    Cli("train-batch-larger-than-data", T.replace("--batch-size 128", "--batch-size 1024"), r"fewer than one batch"),
    Cli("train-out-is-a-folder", T.replace("--out {out_pt}", "--out {a_dir}"), r"is a folder"),
    Cli("train-every-negative", T + " --every -2", r"--every"),
    Cli("train-resume-missing", T + " --resume {missing}", r"does not exist"),
    Cli("train-resume-without-state", T + " --resume {gan}", r"no training state"),
    Cli("train-resume-pickle-payload", T + " --resume {payload}", r"pickle"),
    Cli(
        "train-resume-other-data",
        "train --no-progress --resume {trained} --epochs 2 --data ring8 --out {out_pt}",
        r"disagrees",
    ),
    Cli(
        "train-resume-already-done",
        "train --no-progress --resume {trained} --epochs 1 --out {out_pt}",
        r"already completed",
    ),
    Cli("train-device-cuda-without-gpu", T + " --device cuda", r"no CUDA GPU", when="no-cuda"),
    # --- fitting a ratio
    Cli("fit-ratio-ckpt-missing", F + " --ckpt {missing}", r"does not exist"),
    Cli("fit-ratio-no-discriminator-no-epochs", F + " --ckpt {gan_nod} --epochs 0", r"no discriminator"),
    Cli("fit-ratio-calibration-unknown", F + " --ckpt {gan} --calibration platt", r"calibration"),
    Cli("fit-ratio-kind-unknown", F + " --ckpt {gan} --kind kde", r"--kind"),
    Cli("fit-ratio-data-unknown", F + " --ckpt {gan} --data grid-26", r"--data"),
    Cli("fit-ratio-feature-sp-needs-images", F + " --ckpt {gan} --kind feature-sp", r"image dataset"),
    Cli(
        "fit-ratio-image-data-with-a-2d-generator",
        F + " --ckpt {gan} --data mnist:{empty_dir}",
        r"image dataset.*shape \(2,\)",
    ),
    Cli(
        "fit-ratio-feature-sp-with-a-2d-generator",
        F + " --ckpt {gan} --kind feature-sp --data mnist:{empty_dir}",
        r"not images",
    ),
    Cli("fit-ratio-lr-negative", F + " --ckpt {gan} --lr -1", r"--lr must be > 0"),
    Cli("fit-ratio-out-is-a-folder", F.replace("--out {out_pt}", "--out {a_dir}") + " --ckpt {gan}", r"is a folder"),
    # --- evaluation
    Cli("eval-samples-missing", EV + " --samples {missing} --data grid25", r"does not exist"),
    Cli("eval-samples-without-x", EV + " --samples {samples_nox} --data grid25", r"no array 'x'"),
    Cli(
        "eval-samples-pickled-objects",
        EV + " --samples {samples_obj} --data grid25",
        r"not a readable|pickle|dtype object",
    ),
    Cli("eval-samples-not-npz", EV + " --samples {samples_text} --data grid25", r"not an .npz"),
    Cli("eval-samples-without-data", EV + " --samples {samples_nox}", r"--data"),
    Cli("eval-methods-empty", EV + " --ckpt {gan} --methods ,", r"--methods is empty"),
    Cli("eval-method-unknown", EV + " --ckpt {gan} --methods none,bogus", r"unknown method"),
    Cli("eval-option-without-method", EV + " --ckpt {gan} -o gamma=90", r"name the method"),
    Cli("eval-option-for-absent-method", EV + " --ckpt {gan} --methods none,drs -o mh.k=5", r"not in --methods"),
    Cli("eval-threshold-negative", EV + " --ckpt {gan} --threshold -1", r"--threshold"),
    Cli("eval-option-out-of-range", EV + " --ckpt {gan} --methods none,rs -o rs.budget=0", r"budget must be > 0"),
    Cli("eval-scores-nan", EV + " --ckpt {gan} --ratio {ratio_nan} --methods none,sir -n 10", r"NaN"),
    Cli(
        "eval-image-data-with-a-2d-generator",
        EV + " --ckpt {gan} --data mnist:{empty_dir} -n 10 --methods none",
        r"image dataset.*shape \(2,\)",
    ),
    Cli(
        "eval-image-data-with-2d-samples", EV + " --samples {samples_nox} --data mnist:{empty_dir}", r"expected images"
    ),
    Cli(
        "eval-image-flag-on-2d-data",
        EV + " --ckpt {gan} --data grid25 --inception-weights {missing} --methods none -n 10",
        r"apply to image datasets",
    ),
    Cli("eval-n-zero", EV + " --ckpt {gan} -n 0", r"positive"),
    Cli("eval-out-is-a-file", EV.replace("--out {out}", "--out {a_file}") + " --ckpt {gan}", r"not a folder"),
    # --- the evaluation classifier
    Cli("train-classifier-root-missing", TC + " --data mnist:{missing}", r"not a folder|does not exist"),
    Cli("train-classifier-2d-data", TC + " --data grid25", r"--data|dataset|NAME:ROOT"),
    Cli("train-classifier-epochs-zero", TC + " --data mnist:{empty_dir} --epochs 0", r"need --epochs >= 1"),
    Cli("train-classifier-widths-not-integers", TC + " --data mnist:{empty_dir} --widths 4,x", r"--widths takes"),
    Cli("train-classifier-seed-negative", TC + " --data mnist:{empty_dir} --seed -1", r"--seed must be"),
]


def _fill(text: str, paths: dict) -> str:
    return text.format(**{k: str(v) for k, v in paths.items()})


@pytest.mark.parametrize("case", CLI_CASES, ids=[c.id for c in CLI_CASES])
def test_cli_bad_input(case: Cli, files, tmp_path):
    _needs(case.needs)
    if case.when == "no-cuda" and not NO_CUDA:
        pytest.skip("a CUDA GPU is present")
    if case.when == "unwritable" and files["unwritable"] is None:
        pytest.skip("no unwritable location can be made here")
    paths = {**files, "out": tmp_path / "out", "out_pt": tmp_path / "out" / "gan.pt"}
    argv = shlex.split(_fill(case.argv, paths))
    env = {k: _fill(v, paths) for k, v in case.env.items()}
    before = _snapshot(files["root"], tmp_path)
    res = CliRunner().invoke(app, argv, env=env)
    text = res.output
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert "Traceback" not in text, text
    assert isinstance(res.exception, SystemExit), repr(res.exception)
    assert res.exit_code == 2, (res.exit_code, text)
    assert len(lines) == 1 and lines[0].startswith("error: "), text
    assert re.search(case.match, lines[0]), lines[0]
    assert _snapshot(files["root"], tmp_path) == before, "the command left or changed files"
    assert not files["marker"].exists(), "a pickle payload ran"


def test_the_cli_table_is_large_and_covers_every_command():
    assert len(CLI_CASES) >= 30
    assert len({c.id for c in CLI_CASES}) == len(CLI_CASES)
    commands = {c.argv.split()[0] for c in CLI_CASES}
    assert {"sample", "train", "fit-ratio", "eval"} <= commands


def test_the_payload_is_live(files, tmp_path):
    """Control: loading the payload file without weights_only does run it, so the table's payload rows mean something."""
    marker = tmp_path / "ran"
    torch.save({"payload": Payload(marker)}, tmp_path / "p.pt")
    torch.load(tmp_path / "p.pt", weights_only=False)
    assert marker.exists()


def test_a_full_disk_while_writing_samples_is_one_line(files, tmp_path, monkeypatch):
    """An OS error in the middle of writing (disk full) leaves no partial file and no traceback."""
    from refine.outputs import NpzWriter

    real_write = NpzWriter.write

    def full(self, **chunk):
        real_write(self, **chunk)  # the bytes reach the staged file, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(NpzWriter, "write", full)
    out = tmp_path / "out"
    res = CliRunner().invoke(app, shlex.split(_fill(S2, {**files, "out": out})))
    monkeypatch.setattr(NpzWriter, "write", real_write)
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    assert len(lines) == 1 and "No space left on device" in lines[0]
    assert not out.exists() or not any(out.iterdir())


# ============================================================================= the API table
@dataclass(frozen=True)
class Api:
    id: str
    call: Callable[[dict], object]
    error: type
    match: str
    needs: tuple[str, ...] = ()


def _toy_target(ratio_fn=None, net=None, latent=2):
    gen = LatentGenerator(net or (lambda z: z.clone()), NormalPrior((latent,)))
    return LatentTarget(gen, FunctionRatio(ratio_fn or (lambda x: -(x * x).sum(1))))


def _mlp_target(g_in=2, d_in=2):
    g = build_from_config(arch_config("mlp", in_dim=g_in, out_dim=2, hidden=8, depth=1))
    d = build_from_config(arch_config("mlp", in_dim=d_in, out_dim=1, hidden=8, depth=1))
    return LatentTarget(LatentGenerator(g, NormalPrior((2,))), DiscriminatorRatio(d))


class _NaNStep:
    def step(self, real, *, rng=None):
        return {"loss": float("nan")}


def _disk_full(files):
    """save_gan on a full disk: the OSError propagates, the previous file stays, no temporary file is left."""
    target = files["root"] / "disk-full" / "gan.pt"
    target.parent.mkdir(exist_ok=True)
    target.write_bytes(b"previous")
    real = torch.save

    def full(obj, f, *a, **k):
        f.write(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    torch.save = full
    try:
        g, d = _nets()
        _save(target, g, d)
    finally:
        torch.save = real
        assert target.read_bytes() == b"previous" and sorted(p.name for p in target.parent.iterdir()) == ["gan.pt"]
        target.unlink()
        target.parent.rmdir()


API_CASES = [
    Api(
        "sample-method-unknown", lambda f: refine.sample(_toy_target(), "bogus", n=5), E.ConfigError, r"unknown method"
    ),
    Api("sample-n-zero", lambda f: refine.sample(_toy_target(), "sir", n=0), E.ConfigError, r"positive"),
    Api("sample-n-negative", lambda f: refine.sample(_toy_target(), "rs", n=-2), E.ConfigError, r"positive"),
    Api("sample-n-float", lambda f: refine.sample(_toy_target(), "mh", n=2.5), E.ConfigError, r"positive integer"),
    Api("sample-n-bool", lambda f: refine.sample(_toy_target(), "none", n=True), E.ConfigError, r"positive integer"),
    Api("option-unknown", lambda f: get_sampler("drs", gammma=80), E.ConfigError, r"unknown option.*gammma"),
    Api("option-wrong-type", lambda f: get_sampler("drs", gamma="high"), E.ConfigError, r"expected float"),
    Api("drs-gamma-101", lambda f: get_sampler("drs", gamma=101), E.ConfigError, r"\[0, 100\]"),
    Api("drs-gamma-negative", lambda f: get_sampler("drs", gamma=-0.1), E.ConfigError, r"\[0, 100\]"),
    Api("drs-gamma-nan", lambda f: get_sampler("drs", gamma=float("nan")), E.ConfigError, r"gamma"),
    Api("mh-k-zero", lambda f: get_sampler("mh", k=0), E.ConfigError, r">= 1"),
    Api("sir-candidates-zero", lambda f: get_sampler("sir", candidates=0), E.ConfigError, r">= 1"),
    Api("rs-budget-zero", lambda f: get_sampler("rs", budget=0), E.ConfigError, r"budget"),
    Api("rs-budget-inf", lambda f: get_sampler("rs", budget=float("inf")), E.ConfigError, r"budget"),
    Api("batch-size-zero", lambda f: get_sampler("sir", batch_size=0), E.ConfigError, r"batch_size"),
    Api(
        "ddls-step-size-zero",
        lambda f: get_sampler("ddls", step_size=0.0),
        E.ConfigError,
        r"step_size",
        needs=("ddls",),
    ),
    Api(
        "dgflow-step-size-negative",
        lambda f: get_sampler("dgflow", step_size=-1.0),
        E.ConfigError,
        r"step_size",
        needs=("dgflow",),
    ),
    Api("dcd-steps-zero", lambda f: get_sampler("dcd", steps=0), E.ConfigError, r"steps", needs=("dcd",)),
    Api(
        "wrap-output-range-unknown",
        lambda f: refine.wrap(nn.Linear(2, 2), latent_shape=2, output_range="0-255"),
        E.ConfigError,
        r"output_range|output range",
    ),
    Api(
        "wrap-prior-unknown",
        lambda f: refine.wrap(nn.Linear(2, 2), latent_shape=2, prior="cauchy"),
        E.ConfigError,
        r"unknown prior",
    ),
    Api(
        "wrap-latent-shape-disagrees",
        lambda f: refine.wrap(nn.Linear(2, 2), latent_shape=3, prior=NormalPrior((2,))),
        E.ShapeError,
        r"disagree",
    ),
    Api(
        "wrap-latent-size-wrong",
        lambda f: refine.wrap(nn.Linear(3, 2), latent_shape=2, discriminator=nn.Linear(2, 1), output="logit"),
        E.ShapeError,
        r"latent|shape",
    ),
    Api(
        "wrap-discriminator-input-wrong",
        lambda f: refine.wrap(nn.Linear(2, 2), latent_shape=2, discriminator=nn.Linear(3, 1), output="logit"),
        E.ShapeError,
        r"shape",
    ),
    Api(
        "wrap-discriminator-and-ratio",
        lambda f: refine.wrap(
            nn.Linear(2, 2), latent_shape=2, discriminator=nn.Linear(2, 1), ratio=FunctionRatio(lambda x: x[:, 0])
        ),
        E.ConfigError,
        r"either",
    ),
    Api(
        "discriminator-output-unknown",
        lambda f: DiscriminatorRatio(nn.Linear(2, 1), "energy"),
        E.ConfigError,
        r"unknown discriminator output",
    ),
    Api(
        "temperature-zero",
        lambda f: DiscriminatorRatio(nn.Linear(2, 1), "critic", temperature=0.0),
        E.ConfigError,
        r"temperature",
    ),
    Api(
        "temperature-nan",
        lambda f: DiscriminatorRatio(nn.Linear(2, 1), "critic", temperature=float("nan")),
        E.ConfigError,
        r"temperature",
    ),
    Api("prior-empty-shape", lambda f: NormalPrior((0,)), E.ConfigError, r"latent shape"),
    Api("uniform-prior-empty-box", lambda f: UniformPrior((2,), low=1.0, high=0.0), E.ConfigError, r"high > low"),
    Api(
        "generator-drops-samples",
        lambda f: _toy_target(net=lambda z: z[:-1]).log_weight(torch.zeros(4, 2)),
        E.ShapeError,
        r"4 latents to 3",
    ),
    Api(
        "generator-returns-non-tensor",
        lambda f: _toy_target(net=lambda z: z.tolist()).log_weight(torch.zeros(4, 2)),
        E.ShapeError,
        r"expected a tensor",
    ),
    Api(
        "generator-latent-size-mismatch",
        lambda f: refine.sample(_mlp_target(g_in=3), "sir", n=4),
        E.ShapeError,
        r"generator.*shape",
    ),
    Api(
        "ratio-input-mismatch",
        lambda f: refine.sample(_mlp_target(d_in=3), "mh", n=4, k=2),
        E.ShapeError,
        r"ratio.*shape",
    ),
    Api(
        "ratio-wrong-output-shape",
        lambda f: refine.sample(_toy_target(lambda x: x), "sir", n=4),
        E.ShapeError,
        r"shape",
    ),
    Api(
        "ratio-nan",
        lambda f: refine.sample(_toy_target(lambda x: x[:, 0] * math.nan), "rs", n=4),
        E.NonFiniteError,
        r"NaN",
    ),
    Api(
        "ratio-inf",
        lambda f: refine.sample(_toy_target(lambda x: torch.full((len(x),), math.inf)), "mh", n=4, k=2),
        E.NonFiniteError,
        r"inf",
    ),
    Api(
        "latent-batch-wrong-shape",
        lambda f: _toy_target().log_weight(torch.zeros(4, 3)),
        E.ShapeError,
        r"expected \(N, 2\)",
    ),
    Api(
        "non-differentiable-ratio",
        lambda f: refine.sample(
            LatentTarget(LatentGenerator(lambda z: z.clone(), NormalPrior((2,))), load_ratio(f["ratio_isotonic"])),
            "ddls",
            n=4,
            steps=1,
        ),
        E.NotDifferentiableError,
        r"differentiable",
        needs=("ddls",),
    ),
    Api(
        "mh-init-real-without-real",
        lambda f: refine.sample(_toy_target(), "mh", n=4, k=2, init="real"),
        E.ConfigError,
        r"real",
    ),
    Api(
        "mh-init-real-too-few",
        lambda f: refine.sample(_toy_target(), "mh", n=4, k=2, init="real", real=torch.zeros(2, 2)),
        E.ShapeError,
        r"one real sample per chain",
    ),
    Api(
        "rs-budget-exhausted",
        lambda f: refine.sample(
            _toy_target(lambda x: 1000 * x[:, 0]),
            "rs",
            n=50,
            rng=torch.Generator().manual_seed(0),
            budget=2,
            burn_in=64,
            batch_size=64,
        ),
        E.BudgetExceededError,
        r"rs: \d+ of 50 samples.*budget",
    ),
    Api("load-gan-missing", lambda f: load_gan(f["missing"]), E.CheckpointError, r"does not exist"),
    Api("load-gan-truncated", lambda f: load_gan(f["truncated"]), E.CheckpointError, r"truncated|corrupt"),
    Api("load-gan-text", lambda f: load_gan(f["text"]), E.CheckpointError, r"not a file written by torch.save"),
    Api("load-gan-random-dict", lambda f: load_gan(f["dict"]), E.CheckpointError, r"not a refine GAN checkpoint"),
    Api("load-gan-pickle-payload", lambda f: load_gan(f["payload"]), E.CheckpointError, r"pickle"),
    Api("load-gan-whole-module", lambda f: load_gan(f["module"]), E.CheckpointError, r"pickle"),
    Api("load-gan-version", lambda f: load_gan(f["v2"]), E.CheckpointError, r"version"),
    Api("load-gan-weights-do-not-fit", lambda f: load_gan(f["badweights"]), E.CheckpointError, r"do not fit"),
    Api("load-ratio-of-a-gan", lambda f: load_ratio(f["gan"]), E.CheckpointError, r"not a refine ratio file"),
    Api("load-ratio-pickle-payload", lambda f: load_ratio(f["payload"]), E.CheckpointError, r"pickle"),
    Api("resume-state-missing", lambda f: read_training_state(f["gan"]), E.CheckpointError, r"no training state"),
    Api(
        "resume-into-another-method",
        lambda f: train_toy(
            "grid25",
            epochs=2,
            method="veegan",
            n_train=512,
            batch_size=128,
            hidden=8,
            resume=read_training_state(f["trained"])[1],
        ),
        E.CheckpointError,
        r"resume with the method",
    ),
    Api(
        "train-option-unknown",
        lambda f: train_toy("grid25", epochs=1, n_train=256, batch_size=128, hidden=8, method_options={"lrr": 0.1}),
        E.ConfigError,
        r"unknown option",
    ),
    Api(
        "train-option-wrong-type",
        lambda f: train_toy("grid25", epochs=1, n_train=256, batch_size=128, hidden=8, method_options={"lr": "fast"}),
        E.ConfigError,
        r"lr",
    ),
    Api("train-data-unknown", lambda f: train_toy("grid-26", epochs=1), E.ConfigError, r"unknown 2-D dataset"),
    Api(
        "fit-epochs-negative",
        lambda f: fit(_NaNStep(), torch.zeros(8, 2), epochs=-1, batch_size=4),
        E.ConfigError,
        r"epochs",
    ),
    Api(
        "fit-fewer-samples-than-a-batch",
        lambda f: fit(_NaNStep(), torch.zeros(8, 2), epochs=1, batch_size=16),
        E.ConfigError,
        r"fewer than one batch",
    ),
    Api(
        "fit-diverges",
        lambda f: fit(_NaNStep(), torch.zeros(8, 2), epochs=1, batch_size=4),
        E.NonFiniteError,
        r"diverged",
    ),
    Api(
        "save-to-unwritable-place",
        lambda f: _save(f["a_file"] / "gan.pt", *_nets()),
        E.CheckpointError,
        r"cannot write",
    ),
    Api(
        "fid-weights-missing",
        lambda f: __import__("refine.metrics.inception", fromlist=["x"]).find_inception_weights(f["missing"]),
        E.MissingWeightsError,
        r"Inception weights .* not found",
    ),
    Api(
        "write-onto-a-folder",
        lambda f: refine.io.atomic_save({}, f["a_dir"]),
        E.CheckpointError,
        r"is a folder|it is a folder",
    ),
    Api(
        "image-root-empty",
        lambda f: __import__("refine.data.images", fromlist=["load_images"]).load_images(
            f"mnist:{f['empty_dir']}", split="train"
        ),
        E.DataError,
        r"mnist|idx|folder",
    ),
]


@pytest.mark.parametrize("case", API_CASES, ids=[c.id for c in API_CASES])
def test_api_bad_input(case: Api, files):
    _needs(case.needs)
    before = _snapshot(files["root"])
    with pytest.raises(case.error) as info:
        case.call(files)
    msg = str(info.value)
    assert isinstance(info.value, E.RefineError)
    assert msg and "\n" not in msg, msg
    assert re.search(case.match, msg), msg
    assert _snapshot(files["root"]) == before
    assert not files["marker"].exists(), "a pickle payload ran"


def test_disk_full_keeps_the_previous_file(files):
    with pytest.raises(OSError, match="No space left"):
        _disk_full(files)


def test_the_api_table_is_large():
    assert len(API_CASES) >= 30
    assert len({c.id for c in API_CASES}) == len(API_CASES)
