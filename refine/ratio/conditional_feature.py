"""cDR-RS: one conditional density ratio ``r(x | y)`` in a feature space for all classes (Ding et al. 2021).

DRE-F-SP (:mod:`refine.ratio.feature`) fits one ratio for an unconditional generator. For a
class-conditional generator ``G(z, y)`` the ratio of interest is per class,
``r(x | y) = p(x | y) / p_G(x | y)``; cDR-RS fits it with *one* model rather than one per class:

1. the feature network ``phi`` is DRE-F-SP's (a ResNet-34 trained as a classifier of the labels,
   then frozen);
2. the ratio head takes the feature and the label: ``t = h([e(y), phi(x)])`` with ``e`` a learned
   class embedding of size ``K`` (the paper's choice: the embedding concatenated with the
   feature at the MLP's input), ``r = a(t) >= 0``;
3. it is trained with the SP loss on pairs of the same labels: each generated feature
   ``phi(G(z, y))`` is compared with a real feature of the same class ``y``, and the penalty
   ``lambda (E_{G(.|y)}[r] - 1)^2`` is taken per class and averaged over the classes of the batch.

With the label distributions of the real and generated batches equal, the pooled SP loss is
``sum_y w_y L_y(r(. | y))``: each class's term is minimised by its own true ratio
``p(x | y) / p_G(x | y)`` (the pointwise argument of DRE-F-SP), and the penalty vanishes there.
``lambda`` is chosen on validation data as for DRE-F-SP (:func:`refine.ratio.heads.choose_normalised_head`).

This module holds the numerics (head, loss, fitting); :class:`refine.conditional.ConditionalFeatureRatio`
is the conditional ratio the samplers take.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from ..data.images import ImageData
from ..device import module_device
from ..errors import ConfigError, DataError, ShapeError
from ..nets import arch_config, register_arch
from .feature import DEFAULT_LAMBDAS, _activate, sp_loss
from .fit_feature import _perm, extract_features, label_feature_net
from .heads import check_head_options, fit_heads

__all__ = [
    "ConditionalRatioHead",
    "conditional_sp_loss",
    "conditional_generated_features",
    "fit_conditional_ratio_head",
    "fit_cdre_f_sp",
]


class ConditionalRatioHead(nn.Module):
    """MLP on ``[embedding(y), f]``: ``in_dim + embed_dim -> hidden... -> 1`` (ReLU, optional dropout).

    ``embed_dim`` defaults to ``num_classes`` (cDR-RS). Returns the pre-activation ``t`` ``(N,)``.
    """

    def __init__(
        self, in_dim: int = 256, num_classes: int = 10, embed_dim: int | None = None, hidden=(512, 256), dropout=0.0
    ) -> None:
        super().__init__()
        hidden = tuple(int(h) for h in hidden)
        embed_dim = int(num_classes if embed_dim is None else embed_dim)
        if in_dim < 1 or num_classes < 1 or embed_dim < 1 or any(h < 1 for h in hidden) or not 0.0 <= dropout < 1.0:
            raise ConfigError(
                f"conditional ratio head needs positive sizes and dropout in [0, 1); got in_dim={in_dim}, "
                f"num_classes={num_classes}, embed_dim={embed_dim}, hidden={hidden}, dropout={dropout}"
            )
        self.embed = nn.Embedding(num_classes, embed_dim)
        layers: list[nn.Module] = []
        d = in_dim + embed_dim
        for h in hidden:
            layers += [nn.Linear(d, h), nn.ReLU(inplace=True)]
            if dropout:
                layers += [nn.Dropout(dropout)]
            d = h
        layers += [nn.Linear(d, 1)]
        self.net = nn.Sequential(*layers)
        self.in_dim, self.num_classes = int(in_dim), int(num_classes)

    def forward(self, f: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if f.dim() != 2 or f.shape[1] != self.in_dim:
            raise ShapeError(f"the conditional ratio head takes features (N, {self.in_dim}); got {tuple(f.shape)}")
        if y.shape != (f.shape[0],):
            raise ShapeError(f"labels have shape {tuple(y.shape)}; expected ({f.shape[0]},), one class per feature")
        y = y.long().to(f.device)
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
            raise ConfigError(
                f"class indices must be in [0, {self.num_classes - 1}], got [{int(y.min())}, {int(y.max())}]"
            )
        return self.net(torch.cat([self.embed(y).to(f.dtype), f], 1))[:, 0]


@register_arch("cond-ratio-head")
def cond_ratio_head(
    in_dim: int = 256, num_classes: int = 10, embed_dim: int | None = None, hidden=(512, 256), dropout: float = 0.0
) -> ConditionalRatioHead:
    """cDR-RS's conditional ratio head (a class embedding concatenated with the feature, then an MLP)."""
    return ConditionalRatioHead(in_dim, num_classes, embed_dim, tuple(hidden), dropout)


def conditional_sp_loss(
    r_real: torch.Tensor, r_fake: torch.Tensor, y_fake: torch.Tensor, lam: float = 0.0, num_classes: int | None = None
) -> torch.Tensor:
    """The SP loss of a batch of real and generated ratio values *with the same labels*, plus
    ``lam`` times the mean over the classes in ``y_fake`` of ``(mean r_fake of the class - 1)^2``."""
    loss = sp_loss(r_real, r_fake, 0.0)
    if lam:
        k = int(num_classes if num_classes is not None else int(y_fake.max()) + 1)
        y = y_fake.long().to(r_fake.device)
        sums = torch.zeros(k, dtype=r_fake.dtype, device=r_fake.device).index_add(0, y, r_fake)
        counts = torch.bincount(y, minlength=k)
        present = counts > 0
        means = sums[present] / counts[present].to(r_fake.dtype)
        loss = loss + lam * ((means - 1.0) ** 2).mean()
    return loss


@torch.no_grad()
def conditional_generated_features(
    generator,
    feature_net: nn.Module,
    labels: torch.Tensor,
    *,
    rng,
    batch_size: int = 256,
    progress: bool = False,
    desc: str = "generated features",
) -> torch.Tensor:
    """Features of ``G(z, y)`` for fresh latents and the class indices ``labels`` (one sample per label).

    ``generator`` is a :class:`refine.conditional.ConditionalGenerator` (called as ``G(z, y)``)."""
    dev = module_device(feature_net)
    out = []
    feature_net.eval()
    for i in tqdm(range(0, len(labels), batch_size), desc=desc, unit="batch", disable=not progress, leave=False):
        y = labels[i : i + batch_size]
        z = generator.prior.sample(len(y), rng=rng, device=generator.device)
        x = generator(z, y.to(generator.device))
        out.append(feature_net.features(x.to(dev)).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, getattr(feature_net, "feature_dim", 0))


def _same_class_index(y_real: torch.Tensor, num_classes: int):
    """A function ``(labels, rng) -> indices`` of random real samples with the given labels."""
    order = torch.argsort(y_real, stable=True)
    counts = torch.bincount(y_real, minlength=num_classes)
    starts = torch.cumsum(counts, 0) - counts

    def draw(y: torch.Tensor, rng) -> torch.Tensor:
        u = torch.rand(len(y), generator=rng, device=rng.device if rng is not None else "cpu").cpu()
        return order[starts[y] + (u * counts[y]).long().clamp_max(counts[y] - 1)]

    return draw


@torch.no_grad()
def _val_loss(head, f_real, y_real, f_fake, y_fake, activation, num_classes, batch: int = 8192):
    """(SP loss without penalty, class-averaged E_G[r], per-class E_G[r]) on validation features."""
    dev = module_device(head)

    def values(f, y):
        return torch.cat(
            [
                _activate(head(f[i : i + batch].to(dev), y[i : i + batch].to(dev)), activation).cpu()
                for i in range(0, len(f), batch)
            ]
        )

    rr, rf = values(f_real, y_real), values(f_fake, y_fake)
    counts = torch.bincount(y_fake, minlength=num_classes)
    sums = torch.zeros(num_classes, dtype=rf.dtype).index_add(0, y_fake, rf)
    per = {str(c): float(sums[c] / counts[c]) for c in range(num_classes) if counts[c] > 0}
    return float(sp_loss(rr, rf, 0.0)), sum(per.values()) / max(len(per), 1), per


def _check_features(name: str, f: torch.Tensor, y: torch.Tensor, dim: int, num_classes: int) -> torch.Tensor:
    if f.dim() != 2 or f.shape[1] != dim or len(f) == 0:
        raise ShapeError(f"{name} features must be (N>0, {dim}); got {tuple(f.shape)}")
    if y.shape != (len(f),):
        raise ShapeError(f"{name} labels must be ({len(f)},), one class per feature; got {tuple(y.shape)}")
    y = y.long().cpu()
    if int(y.min()) < 0 or int(y.max()) >= num_classes:
        raise DataError(f"{name} labels range over [{int(y.min())}, {int(y.max())}], outside 0..{num_classes - 1}")
    return y


def fit_conditional_ratio_head(
    f_real: torch.Tensor,
    y_real: torch.Tensor,
    f_fake: torch.Tensor,
    y_fake: torch.Tensor,
    f_real_val: torch.Tensor,
    y_real_val: torch.Tensor,
    f_fake_val: torch.Tensor,
    y_fake_val: torch.Tensor,
    *,
    num_classes: int,
    lambdas: Sequence[float] = DEFAULT_LAMBDAS,
    hidden=(512, 256),
    embed_dim: int | None = None,
    dropout: float = 0.0,
    activation: str = "softplus",
    epochs: int = 30,
    batch_size: int = 256,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    norm_tol: float = 0.1,
    rng: torch.Generator | None = None,
    device="cpu",
    progress: bool = False,
) -> tuple[nn.Module, dict, dict]:
    """Train one conditional head per ``lambda`` on cached labelled features; keep the best normalised one.

    Each epoch passes over the generated features once; each step pairs a batch of them with
    real features drawn at random *from the same classes*. The kept head has the lowest
    validation SP loss among those whose class-averaged ``E_{G(.|y)}[r]`` on the validation
    generated features is within ``norm_tol`` of 1 (else the lowest loss, with a ``warning``), as
    for the unconditional head. Returns ``(head, arch config, report)``; the report carries,
    per lambda, ``E_G[r]`` of every class too.
    """
    lambdas = check_head_options(norm_tol, activation, lambdas)
    k = int(num_classes)
    dim = f_real.shape[1] if f_real.dim() == 2 else -1
    y_real = _check_features("real", f_real, y_real, dim, k)
    y_fake = _check_features("generated", f_fake, y_fake, dim, k)
    y_real_val = _check_features("validation real", f_real_val, y_real_val, dim, k)
    y_fake_val = _check_features("validation generated", f_fake_val, y_fake_val, dim, k)
    missing = sorted(set(y_fake.unique().tolist()) - set(y_real.unique().tolist()))
    if missing:
        raise DataError(f"no real training features of class(es) {missing[:5]} to compare the generated ones with")
    if epochs < 1 or batch_size < 1 or len(f_fake) < batch_size:
        raise ConfigError(
            f"need epochs >= 1 and at least one batch of generated features: epochs={epochs}, batch_size={batch_size}, n={len(f_fake)}"
        )
    cfg = arch_config(
        "cond-ratio-head",
        in_dim=dim,
        num_classes=k,
        embed_dim=int(k if embed_dim is None else embed_dim),
        hidden=list(hidden),
        dropout=dropout,
    )
    draw_real = _same_class_index(y_real, k)
    f_real_d, f_fake_d = f_real.to(device), f_fake.to(device)
    steps = len(f_fake) // batch_size

    def train_epoch(head: nn.Module, opt, lam: float, epoch: int) -> float:
        perm = _perm(len(f_fake), rng)
        tot = 0.0
        for s in tqdm(
            range(steps),
            desc=f"conditional ratio head lambda={lam:g} {epoch + 1}/{epochs}",
            disable=not progress,
            leave=False,
        ):
            idx_f = perm[s * batch_size : (s + 1) * batch_size]
            yb = y_fake[idx_f]
            idx_r = draw_real(yb, rng)
            yd = yb.to(device)
            rf = _activate(head(f_fake_d[idx_f.to(device)], yd), activation)
            rr = _activate(head(f_real_d[idx_r.to(device)], yd), activation)
            loss = conditional_sp_loss(rr, rf, yd, lam, k)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            tot += loss.item()
        return tot / steps

    def validate(head: nn.Module) -> tuple[float, dict]:
        vl, mean_rf, per = _val_loss(head, f_real_val, y_real_val, f_fake_val, y_fake_val, activation, k)
        return vl, {"val_mean_r_fake": mean_rf, "val_mean_r_fake_per_class": per}

    head, report = fit_heads(
        lambdas,
        cfg,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        norm_tol=norm_tol,
        activation=activation,
        rng=rng,
        device=device,
        train_epoch=train_epoch,
        validate=validate,
        counts=(f_real, f_fake, f_real_val, f_fake_val),
        what="conditional ratio head",
    )
    report["penalty"] = "per class: lambda * mean over the classes of the batch of (E_G(.|y)[r] - 1)^2"
    return head, cfg, report


def fit_cdre_f_sp(
    generator,
    real,
    *,
    feature_net: nn.Module | None = None,
    feature_arch: dict | None = None,
    n_val: int = 5000,
    n_fake: int | None = None,
    feature_epochs: int = 2,
    feature_batch_size: int = 128,
    feature_lr: float = 1e-3,
    head_epochs: int = 30,
    head_batch_size: int = 256,
    head_lr: float = 1e-3,
    head_hidden=(512, 256),
    embed_dim: int | None = None,
    lambdas: Sequence[float] = DEFAULT_LAMBDAS,
    activation: str = "softplus",
    rng: torch.Generator | None = None,
    device="cpu",
    progress: bool = False,
) -> tuple[nn.Module, nn.Module, dict]:
    """Fit cDR-RS's conditional ratio for ``generator`` (a ConditionalGenerator) against ``real``
    (a *labelled* ImageData whose labels are the generator's classes).

    ``n_val`` real images are held out, with generated images at the same labels, to choose
    lambda and the epoch. Without ``feature_net``, one is trained from ``feature_arch`` as a
    classifier of the labels on the training images. The head is trained against ``n_fake``
    generated features (default: one at the label of each real training image, so the class
    proportions of the two sides match). Returns ``(feature_net, head, report)``; the report's
    ``archs`` entry holds the architecture configs needed to save them.
    """

    if not isinstance(real, ImageData):
        raise ConfigError("real must be an ImageData (see refine.data.images.load_images)")
    if real.labels is None:
        raise DataError(
            f"{real.spec} has no class labels; the conditional ratio compares real and generated images class by class"
        )
    k = int(generator.num_classes)
    lo, hi = int(real.labels.min()), int(real.labels.max())
    if lo < 0 or hi >= k:
        raise DataError(f"the data's labels range over [{lo}, {hi}] but the generator has {k} classes")
    if n_val < 2 or n_val >= len(real) - 1:
        raise ConfigError(f"n_val must be in [2, {len(real) - 2}] for {len(real)} real images, got {n_val}")
    report: dict = {"real": real.describe(), "num_classes": k}
    val, train = real.random_split(n_val, rng=rng)
    if feature_net is None:
        if feature_arch is None:
            raise ConfigError("pass a trained feature_net or a feature_arch to train one")
        feature_net, report["feature_net"] = label_feature_net(
            train, val, feature_arch, epochs=feature_epochs, batch_size=min(feature_batch_size, len(train)),
            lr=feature_lr, rng=rng, device=device, progress=progress,
        )  # fmt: skip
    else:
        feature_net = feature_net.to(device)
        report["feature_net"] = {"target": "given"}
    feature_net.eval().requires_grad_(False)
    y_train = train.labels.long()
    if n_fake is None:
        y_fake = y_train[_perm(len(y_train), rng)]
    else:
        n_fake = int(n_fake)
        if n_fake < 1:
            raise ConfigError(f"n_fake must be >= 1, got {n_fake}")
        y_fake = y_train[
            torch.randint(
                0, len(y_train), (n_fake,), generator=rng, device=rng.device if rng is not None else "cpu"
            ).cpu()
        ]
    y_val = val.labels.long()
    t0 = time.perf_counter()
    f_real = extract_features(feature_net, train, progress=progress, desc="real features")
    f_real_val = extract_features(feature_net, val, progress=progress, desc="validation real features")
    f_fake = conditional_generated_features(generator, feature_net, y_fake, rng=rng, progress=progress)
    f_fake_val = conditional_generated_features(
        generator, feature_net, y_val, rng=rng, progress=progress, desc="validation generated features"
    )
    report["feature_time_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    head, head_arch, hrep = fit_conditional_ratio_head(
        f_real,
        y_train,
        f_fake,
        y_fake,
        f_real_val,
        y_val,
        f_fake_val,
        y_val,
        num_classes=k,
        lambdas=lambdas,
        hidden=head_hidden,
        embed_dim=embed_dim,
        activation=activation,
        epochs=head_epochs,
        batch_size=min(head_batch_size, len(f_fake)),
        lr=head_lr,
        rng=rng,
        device=device,
        progress=progress,
    )
    hrep["train_time_s"] = time.perf_counter() - t0
    report["head"] = hrep
    report["archs"] = {"feature_net": feature_arch, "head": head_arch}
    return feature_net, head.to(device), report
