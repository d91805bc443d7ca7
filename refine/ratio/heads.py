"""The lambda sweep shared by DRE-F-SP's ratio head and cDR-RS's conditional head.

One head per penalty weight ``lambda``, each kept at its epoch of lowest validation SP loss, then
the choice among them of the best head whose ``E_G[r]`` is within a tolerance of 1
(:func:`fit_heads`). The training epoch and the validation are the caller's, so the unconditional
and the conditional head share everything else.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from ..nets import build_from_config
from .feature import ACTIVATIONS

__all__ = ["check_head_options", "choose_normalised_head", "fit_heads", "sweep_lambdas"]


def build_seeded(cfg: dict, rng: torch.Generator | None) -> nn.Module:
    """Build a network with weights drawn from a seed taken from ``rng`` (global RNG state untouched)."""
    seed = (
        int(torch.randint(0, 2**62, (1,), generator=rng, device=rng.device if rng is not None else "cpu"))
        if rng is not None
        else None
    )
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        return build_from_config(cfg)


def check_head_options(norm_tol: float, activation: str, lambdas: Sequence[float]) -> list[float]:
    """The options every SP-loss head takes, checked; returns ``lambdas`` as floats."""
    if not (math.isfinite(norm_tol) and norm_tol > 0):
        raise ConfigError(f"norm_tol must be a finite value > 0, got {norm_tol}")
    if activation not in ACTIVATIONS:
        raise ConfigError(f"unknown ratio activation {activation!r}; valid: {', '.join(ACTIVATIONS)}")
    lambdas = [float(v) for v in lambdas]
    if not lambdas or any(not math.isfinite(v) or v < 0 for v in lambdas):
        raise ConfigError(f"lambdas must be a non-empty list of finite values >= 0, got {lambdas}")
    return lambdas


def fit_heads(
    lambdas: list[float],
    cfg: dict,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    norm_tol: float,
    activation: str,
    rng,
    device,
    train_epoch,
    validate,
    counts: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    what: str,
) -> tuple[nn.Module, dict]:
    """:func:`sweep_lambdas`, then :func:`choose_normalised_head`: the kept head and its report (every
    lambda's row, the choice and its ``val_mean_r_fake*`` entries, the settings, and the sizes of the
    ``counts`` sets: real, generated, validation real, validation generated features)."""
    heads, rows = sweep_lambdas(
        lambdas,
        cfg,
        epochs=epochs,
        lr=lr,
        weight_decay=weight_decay,
        rng=rng,
        device=device,
        train_epoch=train_epoch,
        validate=validate,
        what=what,
    )
    (head, row), normalised, warning = choose_normalised_head(heads, norm_tol)
    report = {
        "lambdas": rows,
        "lambda": row["lambda"],
        "val_loss": row["val_loss"],
        **{k: v for k, v in row.items() if k.startswith("val_mean_r_fake")},
        "normalised": normalised,
        "norm_tol": norm_tol,
        **({"warning": warning} if warning else {}),
        "activation": activation,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        **dict(zip(("n_real", "n_fake", "n_real_val", "n_fake_val"), (len(c) for c in counts))),
    }
    return head, report


def sweep_lambdas(
    lambdas: Sequence[float],
    cfg: dict,
    *,
    epochs: int,
    lr: float,
    weight_decay: float,
    rng,
    device,
    train_epoch,
    validate,
    what: str = "ratio head",
) -> tuple[list[tuple[nn.Module, dict]], list[dict]]:
    """One head per ``lambda``, each trained ``epochs`` epochs by ``train_epoch(head, opt, lam, epoch)``
    (which returns the epoch's mean loss) and kept at its epoch of lowest ``validate(head)`` loss
    (``validate`` returns ``(loss, extra row fields)``); a non-finite validation loss ends that
    lambda. Returns ``(heads, rows)``: ``(head, row)`` for each lambda that reached a finite loss,
    and a row for every lambda. The shared loop of DRE-F-SP's head and its conditional form."""
    rows: list[dict] = []
    heads: list[tuple[nn.Module, dict]] = []
    for lam in lambdas:
        head = build_seeded(cfg, rng).to(device).train()
        opt = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=weight_decay)
        row: dict = {"lambda": lam, "val_loss": math.inf, "best_epoch": 0}
        state = None
        for epoch in range(epochs):
            train_loss = train_epoch(head, opt, lam, epoch)
            head.eval()
            vl, extra = validate(head)
            head.train()
            if not math.isfinite(vl):
                break
            if vl < row["val_loss"]:
                row.update(val_loss=vl, best_epoch=epoch + 1, train_loss=train_loss, **extra)
                state = {n: v.detach().clone() for n, v in head.state_dict().items()}
        if state is None:
            row["val_loss"] = None
            rows.append(row)
            continue
        head.load_state_dict(state)
        head.eval().requires_grad_(False)
        rows.append(row)
        heads.append((head, row))
    if not heads:
        raise ConfigError(f"no {what} reached a finite validation loss; lower the learning rate")
    return heads, rows


def choose_normalised_head(heads: list[tuple[Any, dict]], norm_tol: float) -> tuple[tuple[Any, dict], bool, str | None]:
    """``(head, row)`` with the lowest ``val_loss`` among rows with ``|val_mean_r_fake - 1| <= norm_tol``;
    else the lowest ``val_loss`` of all, with a warning (the head closest to normalised is often the
    most penalised, i.e. the flattest, and a flat ratio refines nothing). Returns
    ``(choice, normalised, warning)``."""
    ok = [h for h in heads if abs(h[1]["val_mean_r_fake"] - 1.0) <= norm_tol]
    if ok:
        return min(ok, key=lambda h: h[1]["val_loss"]), True, None
    best = min(heads, key=lambda h: h[1]["val_loss"])
    tried = ", ".join(f"{h[1]['lambda']:g}: {h[1]['val_mean_r_fake']:.3f}" for h in heads)
    return (
        best,
        False,
        f"no lambda gave E_G[r] within {norm_tol:g} of 1 on the validation generated images (lambda: E_G[r] = {tried}); "
        f"kept lambda {best[1]['lambda']:g}, the lowest validation loss. Rejection, MH and SIR do not depend on the "
        "ratio's scale, but its values are not a normalised density ratio: try larger --lambdas or more --epochs",
    )
