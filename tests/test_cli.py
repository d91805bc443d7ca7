"""The CLI in-process: train -> fit-ratio -> sample -> eval on a tiny 2-D GAN, and the shipped default."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from refine.cli import app
from refine.io import load_gan, load_ratio
from refine.train.gan import REFIT_LR, REFIT_MAX_EPOCHS, REFIT_MIN_DELTA, REFIT_PATIENCE

runner = CliRunner()


def invoke(*args):
    res = runner.invoke(app, [str(a) for a in args])
    return res


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    ckpt = d / "gan.pt"
    res = invoke(
        "train",
        "--data",
        "grid25",
        "--epochs",
        1,
        "--n-train",
        2048,
        "--batch-size",
        256,
        "--hidden",
        16,
        "--seed",
        0,
        "--device",
        "cpu",
        "--out",
        ckpt,
        "--no-progress",
    )
    assert res.exit_code == 0, res.output
    return ckpt


def test_train_writes_a_loadable_checkpoint(tiny_ckpt):
    gan = load_gan(tiny_ckpt)
    assert gan.generator.prior.shape == (2,)
    assert gan.ratio is not None and gan.config["meta"]["dataset"] == "grid25"


@pytest.mark.parametrize(
    "kind, conditional, given, expected",
    [
        ("discriminator", False, (None, None, None), (REFIT_MAX_EPOCHS, REFIT_PATIENCE, REFIT_LR)),
        ("discriminator", False, (None, 0, None), (10, 0, REFIT_LR)),
        ("discriminator", False, (0, None, None), (0, 0, REFIT_LR)),
        ("discriminator", False, (7, None, 1e-2), (7, REFIT_PATIENCE, 1e-2)),
        ("discriminator", True, (None, None, None), (10, 0, 1e-3)),
        ("feature-sp", False, (None, None, None), (10, 0, 1e-3)),
        ("feature-sp", True, (3, None, 5e-4), (3, 0, 5e-4)),
    ],
)
def test_fit_ratio_flags_left_unset_follow_what_is_fitted(kind, conditional, given, expected):
    from refine.cli.fit_ratio import _unset_flags

    assert _unset_flags(kind, conditional, *given) == expected


def test_fit_ratio_refits_with_early_stopping_by_default(tiny_ckpt, tmp_path):
    """No --epochs, --patience or --lr: the discriminator is refitted at REFIT_LR, stopped on held-out points
    within REFIT_MAX_EPOCHS epochs, its best epoch kept; the record says so."""
    ratio = tmp_path / "ratio.pt"
    res = invoke("fit-ratio", "--ckpt", tiny_ckpt, "--n-train", 2048, "--n-val", 512, "--device", "cpu", "--out", ratio,
                 "--no-progress")  # fmt: skip
    assert res.exit_code == 0, res.output
    meta = torch.load(ratio, weights_only=True)["meta"]
    assert (meta["epochs"], meta["patience"], meta["lr"], meta["n_val"]) == (
        REFIT_MAX_EPOCHS,
        REFIT_PATIENCE,
        REFIT_LR,
        512,
    )
    hist = meta["history"]
    assert len(hist) == meta["epochs_run"] and all("val_loss" in h for h in hist)
    losses = [h["val_loss"] for h in hist]
    best = meta["best_epoch"]
    assert losses[best - 1] == min(losses)  # the epoch whose weights were kept
    ref, last = float("inf"), 0  # the last epoch whose held-out loss fell by more than REFIT_MIN_DELTA
    for epoch, v in enumerate(losses, 1):
        if v < ref - REFIT_MIN_DELTA:
            ref, last = v, epoch
        if epoch - last >= REFIT_PATIENCE:
            break
    assert len(hist) == min(epoch, REFIT_MAX_EPOCHS)  # stopped by the rule, or at the cap
    assert (
        f"{len(hist)} of {REFIT_MAX_EPOCHS} epochs" in res.output
        and f"best held-out loss at epoch {best}" in res.output
    )


def test_fit_ratio_then_sample_then_eval(tiny_ckpt, tmp_path):
    ratio = tmp_path / "ratio.pt"
    res = invoke(
        "fit-ratio",
        "--ckpt",
        tiny_ckpt,
        "--epochs",
        1,
        "--n-train",
        2048,
        "--batch-size",
        256,
        "--calibration",
        "logistic",
        "--n-calib",
        500,
        "--device",
        "cpu",
        "--out",
        ratio,
        "--no-progress",
    )
    assert res.exit_code == 0, res.output
    assert "logistic calibration" in res.output
    r = load_ratio(ratio)
    assert r.calibration is not None
    out = tmp_path / "mh"
    res = invoke(
        "sample",
        "--ckpt",
        tiny_ckpt,
        "--ratio",
        ratio,
        "--method",
        "mh",
        "-o",
        "k=5",
        "-n",
        100,
        "--seed",
        3,
        "--device",
        "cpu",
        "--out",
        out,
        "--no-progress",
    )
    assert res.exit_code == 0, res.output
    with np.load(out / "samples.npz", allow_pickle=False) as f:
        assert f["x"].shape == (100, 2) and f["z"].shape == (100, 2)
    run = json.loads((out / "run.json").read_text())
    assert run["method"] == "mh" and run["options"]["k"] == 5 and run["seed"] == 3
    assert len(run["inputs"]["checkpoint"]["sha256"]) == 64 and len(run["inputs"]["ratio"]["sha256"]) == 64
    assert run["versions"]["torch"] == torch.__version__
    assert (out / "samples.png").stat().st_size > 1000
    ev = tmp_path / "eval"
    res = invoke(
        "eval",
        "--ckpt",
        tiny_ckpt,
        "--ratio",
        ratio,
        "--methods",
        "none,drs",
        "-o",
        "drs.burn_in=512",
        "-n",
        200,
        "--device",
        "cpu",
        "--out",
        ev,
        "--no-progress",
    )
    assert res.exit_code == 0, res.output
    rows = json.loads((ev / "eval.json").read_text())["rows"]
    assert [r["method"] for r in rows] == ["none", "drs"]
    assert all(0 <= r["hq_fraction"] <= 1 for r in rows)
    assert (ev / "eval.png").is_file() and (ev / "eval.md").read_text().startswith("| method")
    res = invoke("eval", "--samples", out / "samples.npz", "--data", "grid25")
    assert res.exit_code == 0 and "hq_fraction" in res.output


def test_eval_reports_a_method_over_its_budget_as_a_row_and_scores_the_others(tmp_path):
    """On 2-D data as on images: a refused method is a row with its error, the run still succeeds."""
    ev = tmp_path / "eval"
    res = invoke("eval", "--methods", "none,rs,sir", "-o", "rs.budget=1", "-o", "sir.candidates=4", "-n", 200,
                 "--device", "cpu", "--out", ev, "--no-progress")  # fmt: skip
    assert res.exit_code == 0, res.output
    rows = json.loads((ev / "eval.json").read_text())["rows"]
    assert [r["method"] for r in rows] == ["none", "rs", "sir"]
    assert "hq_fraction" not in rows[1] and "raise -o budget" in rows[1]["error"]
    assert all(0 <= rows[i]["hq_fraction"] <= 1 for i in (0, 2))
    table = (ev / "eval.md").read_text()
    assert table.splitlines()[0].endswith("| error |") and "raise -o budget" in table
    assert (ev / "eval.png").is_file()


def test_same_seed_same_output(tiny_ckpt, tmp_path):
    outs = []
    for name in ("a", "b"):
        res = invoke(
            "sample",
            "--ckpt",
            tiny_ckpt,
            "--method",
            "sir",
            "-o",
            "candidates=4",
            "-n",
            50,
            "--seed",
            11,
            "--device",
            "cpu",
            "--out",
            tmp_path / name,
            "--no-progress",
        )
        assert res.exit_code == 0, res.output
        with np.load(tmp_path / name / "samples.npz") as f:
            outs.append(f["x"])
    assert np.array_equal(*outs)


def test_default_run_uses_the_shipped_gan(tmp_path):
    res = invoke("sample", "--method", "drs", "-n", 200, "--device", "cpu", "--out", tmp_path, "--no-progress")
    assert res.exit_code == 0, res.output
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["inputs"]["default"] is True and run["dataset"] == "grid25"


def test_list_shows_methods_and_options():
    res = invoke("list")
    assert res.exit_code == 0
    for word in ("drs", "gamma", "mh", "k=640", "sir", "candidates", "rs", "grid25"):
        assert word in res.output


@pytest.mark.parametrize(
    "args,needle",
    [
        (["sample", "--method", "nope"], "valid methods"),
        (["sample", "--method", "drs", "-o", "gamma=150"], "[0, 100]"),
        (["sample", "--method", "drs", "-o", "bogus=1"], "valid options"),
        (["sample", "--method", "drs", "-n", "0"], "positive"),
        (["sample", "--ckpt", "/no/such/file.pt", "--method", "none"], "does not exist"),
        (["sample", "--device", "cuda:7", "--method", "none"], "cuda"),
        (["eval", "--samples", "/no/such.npz", "--data", "grid25"], "does not exist"),
    ],
)
def test_bad_input_is_one_line_without_traceback(args, needle, tmp_path):
    res = invoke(*args, "--out", tmp_path / "o") if args[0] != "eval" else invoke(*args)
    assert res.exit_code == 2, res.output
    assert needle in res.output
    assert "Traceback" not in res.output
    assert not (tmp_path / "o" / "samples.npz").exists()


def test_old_option_spellings_warn_on_the_command_line(tmp_path):
    """A deprecated option name still works and the person typing it is told, in one line."""
    import subprocess
    import sys

    res = subprocess.run(
        [sys.executable, "-m", "refine", "sample", "-m", "ddls", "-o", "temperature=1.0", "-o", "steps=2"]
        + ["-n", "16", "--out", str(tmp_path / "out"), "--no-progress", "--device", "cpu"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    assert "warning: option temperature of method ddls is now potential_temperature" in res.stderr.splitlines()
    assert "Traceback" not in res.stderr and "DeprecationWarning" not in res.stderr
