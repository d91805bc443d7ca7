"""Benchmark scripts' own machinery, on small settings: what they measure must not change what they train."""

import dataclasses
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from render_tables import script as _script  # noqa: E402  (loads benchmarks/NAME.py without running it)


def test_dot_demo_tracking_scores_each_epoch_without_touching_the_training(monkeypatch):
    """``--track``: the scores come every K epochs, and the pair trained is the one trained without them."""
    dd = _script("dot_demo")
    for key, value in (("n_train", 256), ("batch_size", 64), ("hidden", 16), ("disc_hidden", 16)):
        monkeypatch.setitem(dd.TRAIN, key, value)
    monkeypatch.setitem(dd.TRAIN, "options", {**dd.TRAIN["options"], "d_steps": 2})
    g0, d0, _, none = dd.train(0, 3, track=0, n=64)
    g1, d1, _, tracked = dd.train(0, 3, track=1, n=64)
    assert none == [] and [t["epoch"] for t in tracked] == [1, 2, 3]
    assert [r["label"] for r in tracked[0]["rows"]] == [label for label, _s, _o in dd.ROWS]
    assert all(0.0 <= r["hq4"] <= 1.0 for t in tracked for r in t["rows"])
    for a, b in ((g0.net, g1.net), (d0, d1)):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert (
        tracked[-1]["rows"][0]["hq4"]
        == dd.evaluate_rows(dd.LatentTarget(g1, dd.DiscriminatorRatio(d1, "critic")), dd.ROWS[:1], 64, 0)[0]["hq4"]
    )


class _MixtureAsGenerator:
    """A 'generator' that samples a mixture exactly (refine's own Mixture), with some of its modes left out."""

    def __init__(self, mix, drop: tuple[int, ...] = ()) -> None:
        keep = tuple(m for i, m in enumerate(mix.means) if i not in drop)
        self.mix = dataclasses.replace(mix, means=keep)

    def sample(self, n: int, *, rng: torch.Generator):
        return None, self.mix.sample(n, rng=rng)


def test_exact_rs_floor_bounds_the_ratio_from_below():
    """The floor never exceeds sup p_data / p_G where that is known, and grows with the data a generator misses."""
    cr = _script("critic_ratio")
    mix = cr.get_mixture("grid25-wgan")
    n = 200_000
    # the data themselves: sup p_data / p_G = 1, so every mode's bound must stay below 1
    same = cr.exact_rs_floor(_MixtureAsGenerator(mix), mix, n=n)
    assert same["bound"] <= 1.0 and sum(same["counts"]) > 0
    # 24 of the 25 modes at 25/24 of their weight: the dropped mode has no generator mass at all, so the bound is
    # the data's mass in its disc over the Poisson upper bound for a count of 0, -log(alpha) / n
    missing = cr.exact_rs_floor(_MixtureAsGenerator(mix, drop=(7,)), mix, n=n)
    assert missing["mode"] == 7 and missing["counts"][7] == 0
    expected = same["p_data_disc"] / (-cr.math.log(cr.FLOOR_ALPHA) / n)
    assert abs(missing["bound"] - expected) <= 1e-6 * expected
