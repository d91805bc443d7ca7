"""Refitting a discriminator against a fixed generator: held-out loss, early stopping, the best weights kept."""

from __future__ import annotations

import pytest
import torch

from refine.data.toy2d import get_mixture
from refine.errors import ConfigError
from refine.generator import LatentGenerator, NormalPrior
from refine.nets import arch_config, build_from_config
from refine.train.gan import fit_discriminator, heldout_logistic_loss
from refine.train.loop import fit

pytestmark = pytest.mark.usefixtures("one_thread")


def _pair(seed: int = 0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        g = build_from_config(arch_config("mlp", in_dim=2, out_dim=2, hidden=16, depth=2)).eval().requires_grad_(False)
        d = build_from_config(arch_config("mlp", in_dim=2, out_dim=1, hidden=64, depth=2))
    return LatentGenerator(g, NormalPrior((2,))), d


def test_early_stopping_keeps_the_best_epoch():
    """A few real points and a wide discriminator overfit: the held-out loss turns up, training stops
    ``patience`` epochs after its minimum, and the weights of that epoch are the ones left."""
    gen, d = _pair()
    mix = get_mixture("grid25")
    rng = torch.Generator().manual_seed(1)
    train, val = mix.sample(128, rng=rng), mix.sample(2048, rng=rng)
    hist = fit_discriminator(gen, d, train, epochs=400, batch_size=32, lr=3e-3, val=val, patience=5, rng=rng)
    losses = [h["val_loss"] for h in hist]
    best = min(range(len(losses)), key=losses.__getitem__)
    assert len(hist) < 400, "the held-out loss never stopped improving"
    assert hist[-1]["best_epoch"] == best + 1 and len(hist) == best + 1 + 5
    # the same run capped at the best epoch ends with exactly the weights that were put back
    gen2, d2 = _pair()
    rng2 = torch.Generator().manual_seed(1)
    train2, val2 = mix.sample(128, rng=rng2), mix.sample(2048, rng=rng2)
    fit_discriminator(gen2, d2, train2, epochs=best + 1, batch_size=32, lr=3e-3, val=val2, rng=rng2)
    assert all(torch.equal(a, b) for a, b in zip(d.state_dict().values(), d2.state_dict().values()))
    assert all(p.requires_grad for p in d.parameters())  # flags as they were


def test_held_out_rows_without_early_stopping():
    gen, d = _pair()
    rng = torch.Generator().manual_seed(2)
    mix = get_mixture("grid25")
    hist = fit_discriminator(
        gen, d, mix.sample(256, rng=rng), epochs=3, batch_size=64, val=mix.sample(256, rng=rng), rng=rng
    )
    assert [h["epoch"] for h in hist] == [1, 2, 3]
    assert all(0 < h["val_loss"] < 5 and 0 <= h["val_acc"] <= 1 for h in hist)
    assert hist[-1]["best_epoch"] in (1, 2, 3)


def test_patience_needs_held_out_data():
    gen, d = _pair()
    with pytest.raises(ConfigError, match="held-out"):
        fit_discriminator(gen, d, torch.zeros(64, 2), epochs=2, patience=3)


def test_on_epoch_can_end_training():
    class Count:
        steps = 0

        def step(self, real, *, rng=None):
            Count.steps += 1
            return {"loss": 0.0}

    hist = fit(Count(), torch.zeros(40, 2), epochs=10, batch_size=10, on_epoch=lambda e, h: e == 3)
    assert [h["epoch"] for h in hist] == [1, 2, 3] and Count.steps == 12


def test_heldout_loss_of_known_discriminators():
    import math

    zero = torch.nn.Linear(2, 1)
    torch.nn.init.zeros_(zero.weight), torch.nn.init.zeros_(zero.bias)
    real, fake = torch.ones(10, 2), -torch.ones(30, 2)
    loss, acc = heldout_logistic_loss(zero, real, fake)
    assert loss == pytest.approx(math.log(2)) and acc == 0.0
    sign = torch.nn.Linear(2, 1)
    with torch.no_grad():
        sign.weight.fill_(50.0), sign.bias.zero_()
    loss, acc = heldout_logistic_loss(sign, real, fake, batch_size=7)
    assert loss < 1e-40 and acc == 1.0


def test_min_delta_ends_a_run_whose_held_out_loss_only_creeps_to_zero():
    """Generated points far from the data are perfectly separable: the held-out loss keeps falling as the
    logits grow, so without a minimum improvement early stopping waits for the cap; with one it stops
    ``patience`` epochs after the last epoch that improved by more than ``min_delta``, keeping the lowest loss."""
    mix = get_mixture("grid25")

    def run(min_delta):
        gen, d = _pair(3)
        far = LatentGenerator(lambda z: gen.net(z) + 20.0, NormalPrior((2,)))
        rng = torch.Generator().manual_seed(4)
        train, val = mix.sample(512, rng=rng), mix.sample(512, rng=rng)
        return fit_discriminator(
            far, d, train, epochs=60, batch_size=64, lr=1e-3, val=val, patience=2, min_delta=min_delta, rng=rng
        )

    creep, stopped = run(0.0), run(1e-3)
    losses = [h["val_loss"] for h in stopped]
    assert losses[0] > 1e-3 and len(stopped) < len(creep)
    # the stopping rule, replayed from the recorded losses
    ref_loss, ref_epoch = float("inf"), 0
    for epoch, loss in enumerate(losses, 1):
        if loss < ref_loss - 1e-3:
            ref_loss, ref_epoch = loss, epoch
    assert len(stopped) == ref_epoch + 2
    assert stopped[-1]["best_epoch"] == 1 + min(range(len(losses)), key=losses.__getitem__)
    with pytest.raises(ConfigError, match="min_delta"):
        fit_discriminator(*_pair(), mix.sample(64), epochs=1, val=mix.sample(64), patience=1, min_delta=-1.0)


def test_an_early_stopping_refit_says_its_epochs_are_a_cap(capsys):
    """With patience the progress bar's length is the cap, not the plan: its label says so, and after each
    epoch it shows the held-out loss and the best epoch so far."""
    gen, d = _pair()
    mix = get_mixture("grid25")
    rng = torch.Generator().manual_seed(3)
    hist = fit_discriminator(
        gen, d, mix.sample(256, rng=rng), epochs=4, batch_size=64, val=mix.sample(256, rng=rng), patience=2,
        rng=rng, progress=True,
    )  # fmt: skip
    err = capsys.readouterr().err
    assert "refitting (stops early, at most 4 epochs)" in err
    assert f"held-out loss={hist[-1]['val_loss']:.4g}" in err and f"best epoch={hist[-1]['best_epoch']}" in err
