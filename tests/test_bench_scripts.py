"""Benchmark scripts' own machinery, on small settings: what they measure must not change what they train."""

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
