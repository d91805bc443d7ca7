"""refine tune: the search on a target whose best setting is known, the budget, the config replay, resume."""

import json
import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from refine.cli import app
from refine.data.toy2d import get_mixture
from refine.errors import ConfigError
from refine.generator import LatentGenerator, NormalPrior
from refine.io import load_gan, load_ratio
from refine.io.pretrained import pretrained_path
from refine.target import LatentTarget
from refine.tune import ModeScorer, schedule, tune
from refine.tune.space import passes

runner = CliRunner()
SCALE = 1.5  # the "generator": z ~ N(0, I) scaled, so p_G = N(0, SCALE^2 I)


class _Scale(torch.nn.Module):
    def forward(self, z):
        return SCALE * z


class ExactRatio:
    """``log r(x) = log p_data(x) - log p_G(x)`` for the 25-Gaussian grid against N(0, SCALE^2 I), in closed form."""

    differentiable = True

    def __init__(self):
        self.mix = get_mixture("grid25")

    def log_ratio(self, x):
        means = self.mix.means_tensor(x.device, x.dtype)
        s2 = self.mix.std**2
        log_data = torch.logsumexp(-((x[:, None, :] - means) ** 2).sum(-1) / (2 * s2), 1) - math.log(
            2 * math.pi * s2 * self.mix.n_modes
        )
        log_gen = -(x**2).sum(-1) / (2 * SCALE**2) - math.log(2 * math.pi * SCALE**2)
        return log_data - log_gen


pytestmark = pytest.mark.usefixtures("one_thread")  # many tiny trials


@pytest.fixture(scope="module")
def exact_target():
    return LatentTarget(LatentGenerator(_Scale(), NormalPrior((2,))), ExactRatio())


@pytest.fixture(scope="module")
def shipped_target():
    gan = load_gan(pretrained_path("toy2d-grid25-gan"))
    return LatentTarget(gan.generator, load_ratio(pretrained_path("toy2d-grid25-ratio")))


def test_schedule_halves_to_keep():
    assert [(r.size, r.n) for r in schedule(4000, 27)] == [(27, 444), (9, 1333), (3, 4000)]
    assert [(r.size, r.n) for r in schedule(900, 9, keep=1)] == [(9, 100), (3, 300), (1, 900)]
    with pytest.raises(ConfigError, match="first rung"):
        schedule(100, 27)


def test_search_finds_the_known_best_setting(exact_target):
    # With the exact ratio, SIR keeps a high-quality sample whenever one of its m candidates is one,
    # so its HQ fraction is 1 - (1 - p)^m (p ~ 0.11, the raw HQ fraction here): strictly rising in m,
    # and the best setting within a budget of 10 passes per sample is m = 10. HQ(10) - HQ(8) ~ 0.08,
    # over five standard errors at the final rung's n = 2000 (sd <= 0.5 / sqrt(2000) = 0.011 per
    # setting), so the search must end at m >= 9 and rank sir above the raw generator.
    res = tune(
        exact_target, ModeScorer("grid25"), budget=10, methods=["none", "sir"], n=2000, trials=27, keep=1, seed=0
    )
    assert res.chosen == "sir"
    assert res.best["sir"]["setting"]["candidates"] >= 9
    raw, sir = res.best["none"]["test"]["metrics"]["hq_fraction"], res.best["sir"]["test"]["metrics"]["hq_fraction"]
    assert sir > 1 - (1 - raw) ** 8  # the test re-score agrees: better than m = 8 would be in expectation


def test_budget_is_never_exceeded(shipped_target):
    budget = 12.0
    res = tune(shipped_target, ModeScorer("grid25"), budget=budget, n=900, trials=9, keep=1, seed=1)
    ok = [t for t in res.trials if t["status"] == "ok" and t["rung"] != "test"]
    assert {t["method"] for t in ok} >= {"none", "rs", "drs", "sir", "mh", "ddls", "dgflow", "dcd", "dot"}
    assert all(t["cost"]["cost"] <= budget for t in ok)
    final = [t for t in ok if t["n"] == 900]  # at the final n the projected cost is the measured one
    assert final and all(t["cost"]["cost"] <= budget for t in final)
    # a rejection setting that would need more proposals stops and is recorded, never promoted
    assert all(t["status"] in ("ok", "over_budget", "diverged") for t in res.trials)


def test_cost_counts_backward_passes_twice():
    assert (
        passes(
            {"g_evals_per_sample": 6, "g_backward_per_sample": 6, "d_evals_per_sample": 6, "d_backward_per_sample": 6}
        )["cost"]
        == 18
    )
    assert passes({"g_evals_per_sample": 1, "d_evals_per_sample": 11, "d_backward_per_sample": 11})["cost"] == 33


def test_resume_after_an_interrupt_gives_the_same_result(shipped_target, tmp_path):
    kw = dict(budget=10, methods=["none", "drs", "sir", "ddls"], n=450, trials=9, keep=1, seed=3)
    whole = tune(shipped_target, ModeScorer("grid25"), journal=tmp_path / "a.json", **kw)
    seen = []

    def stop_after_five(trial):
        seen.append(trial)
        if len(seen) == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        tune(shipped_target, ModeScorer("grid25"), journal=tmp_path / "b.json", on_trial=stop_after_five, **kw)
    assert len(json.loads((tmp_path / "b.json").read_text())["trials"]) == 5
    with pytest.raises(ConfigError, match="--resume"):
        tune(shipped_target, ModeScorer("grid25"), journal=tmp_path / "b.json", **kw)
    with pytest.raises(ConfigError, match="other settings"):
        tune(shipped_target, ModeScorer("grid25"), journal=tmp_path / "b.json", resume=True, **{**kw, "seed": 4})
    resumed = tune(shipped_target, ModeScorer("grid25"), journal=tmp_path / "b.json", resume=True, **kw)
    assert resumed.resumed == 5
    assert resumed.chosen == whole.chosen
    for m in whole.best:
        assert resumed.best[m]["setting"] == whole.best[m]["setting"]
        assert resumed.best[m]["test"]["objective"] == whole.best[m]["test"]["objective"]
    strip = lambda ts: [{k: v for k, v in t.items() if k != "wall_time_s"} for t in ts]  # noqa: E731
    assert strip(resumed.trials) == strip(whole.trials)


def test_config_round_trips_through_refine_sample(tmp_path):
    out = tmp_path / "tune"
    res = runner.invoke(
        app,
        [
            "tune",
            "--budget",
            "10",
            "-n",
            "450",
            "--trials",
            "9",
            "--keep",
            "1",
            "--methods",
            "none,rs,sir",
            "--device",
            "cpu",
            "--out",
            str(out),
            "--no-progress",
        ],
    )
    assert res.exit_code == 0, res.output
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["method"] in ("rs", "sir") and (out / "front.png").stat().st_size > 0 and (out / "tune.md").exists()
    res = runner.invoke(
        app,
        [
            "sample",
            "--config",
            str(out / "config.json"),
            "-n",
            "450",
            "--device",
            "cpu",
            "--out",
            str(tmp_path / "s"),
            "--no-progress",
        ],
    )
    assert res.exit_code == 0, res.output
    x = torch.from_numpy(np.load(tmp_path / "s" / "samples.npz")["x"])
    again = ModeScorer("grid25")(x, "test")
    for k in (
        "objective",
        "hq_fraction",
        "modes",
        "kl_uniform",
    ):  # exactly the samples the tune scored on the test split
        assert again[k] == cfg["tuned"]["test"][k]
    run = json.loads((tmp_path / "s" / "run.json").read_text())
    assert run["method"] == cfg["method"] and run["seed"] == cfg["seed"]
    assert run["config"]["path"] == str((out / "config.json").resolve()) and len(run["config"]["sha256"]) == 64
    # an explicit argument that disagrees with the config is one error line, before anything is written
    other = "sir" if cfg["method"] == "rs" else "rs"
    res = runner.invoke(
        app,
        ["sample", "--config", str(out / "config.json"), "-m", other, "--out", str(tmp_path / "t"), "--no-progress"],
    )
    assert res.exit_code == 2 and "disagree" in res.output and not (tmp_path / "t").exists()
    # a second tune into the same folder without --resume is refused; with it, nothing is rerun
    res = runner.invoke(
        app,
        [
            "tune",
            "--budget",
            "10",
            "-n",
            "450",
            "--trials",
            "9",
            "--keep",
            "1",
            "--methods",
            "none,rs,sir",
            "--device",
            "cpu",
            "--out",
            str(out),
            "--no-progress",
        ],
    )
    assert res.exit_code == 2 and "--resume" in res.output
    res = runner.invoke(
        app,
        [
            "tune",
            "--budget",
            "10",
            "-n",
            "450",
            "--trials",
            "9",
            "--keep",
            "1",
            "--methods",
            "none,rs,sir",
            "--device",
            "cpu",
            "--out",
            str(out),
            "--no-progress",
            "--resume",
        ],
    )
    assert res.exit_code == 0, res.output
    assert json.loads((out / "config.json").read_text())["seed"] == cfg["seed"]


def test_image_scorer_matches_score_images_and_computes_real_radii_once(tmp_path, monkeypatch):
    """The image scorer's FD, recall and coverage are refine.eval's, with the real k-NN radii computed once per split."""
    import gzip

    import refine.tune.score as score_mod
    from refine.eval import FeatureSpace, score_images, to_uint8
    from refine.tune.score import ImageScorer

    def idx(arr):
        return bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape) + arr.tobytes()

    g = np.random.default_rng(0)
    for split, n in (("train", 90), ("t10k", 60)):
        images = g.integers(0, 256, size=(n, 28, 28)).astype(np.uint8)
        for kind, arr in (("images-idx3", images), ("labels-idx1", (np.arange(n) % 10).astype(np.uint8))):
            with gzip.open(tmp_path / f"{split}-{kind}-ubyte.gz", "wb") as f:
                f.write(idx(arr))

    class Pixels(torch.nn.Module):
        def forward(self, x):
            return x.float().flatten(1)[:, ::98] / 255.0  # 8 pixels as features

    space = FeatureSpace(
        short="classifier", network="pixels", key="pixels", module=Pixels().eval(), transform=lambda x: x, logits=None
    )
    scorer = ImageScorer(space, f"mnist:{tmp_path}", image_shape=(1, 28, 28), output_range="[-1,1]", n_val=50)
    calls = []
    real_knn = score_mod.knn_radii
    monkeypatch.setattr(score_mod, "knn_radii", lambda x, k=3: calls.append(len(x)) or real_knn(x, k))
    fake = torch.rand(40, 1, 28, 28, generator=torch.Generator().manual_seed(1)) * 2 - 1
    for _ in range(3):
        for split in ("validation", "test"):
            got = scorer(fake, split)
            want = score_images(space, to_uint8(fake, "[-1,1]"), scorer.refs[split], metrics=("fid", "prdc"))
            assert got["objective"] == pytest.approx(-want["fd"])
            assert got["fd"] == pytest.approx(want["fd"]) and set(got) == {"objective", *scorer.columns}
            assert got["recall"] == want["recall"] and got["coverage"] == want["coverage"]
    assert sorted(c for c in calls if c != 40) == [50, 60]  # the real radii: once per split; the rest are the fakes'
    with pytest.raises(ValueError):
        scorer(fake, "train")
