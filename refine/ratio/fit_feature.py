"""Fitting DRE-F-SP (Ding, Wang & Welch 2020); the model is :mod:`refine.ratio.feature`.

1. A feature network ``phi`` (:mod:`refine.nets.resnet`: ResNet-34 with a linear feature layer)
   is trained as a classifier on the labelled real data by cross-entropy, then frozen.
   *Unlabelled data* (e.g. ``folder:PATH`` without class subfolders): there are no classes to
   learn, so the network is trained to tell real images from generated ones (two classes) on
   images that the ratio head is not trained on; it then captures exactly the differences
   between data and generator. A network trained elsewhere can be passed in instead.
2. One ratio head per ``lambda`` of a grid is trained on cached features of real and generated
   images with the SP loss (:func:`sweep_lambdas`), each kept at its epoch of lowest validation
   loss *without the penalty* (which estimates the Bregman divergence to the true ratio, up to
   a constant).
3. The kept head has the lowest such loss among those whose ``E_G[r]`` on validation generated
   features is within ``norm_tol`` of 1 (:func:`choose_normalised_head`); when none is, the
   lowest loss, with a warning in the report.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..data.images import ImageData, to_float
from ..device import module_device
from ..errors import ConfigError, DataError, ShapeError
from ..metrics.features import extract_features as _extract_features
from ..nets import arch_config
from .feature import DEFAULT_LAMBDAS, FeatureRatio, _activate, sp_loss
from .heads import build_seeded, check_head_options, choose_normalised_head, fit_heads, sweep_lambdas

__all__ = [
    "train_feature_net",
    "extract_features",
    "generated_features",
    "classifier_accuracy",
    "fit_ratio_head",
    "sweep_lambdas",
    "choose_normalised_head",
    "fit_dre_f_sp",
]


def _perm(n: int, rng) -> torch.Tensor:
    return torch.randperm(n, generator=rng, device=rng.device if rng is not None else "cpu").cpu()


class _Features(nn.Module):
    """``x -> net.features(x)`` as float32: a feature network as :func:`refine.metrics.features.extract_features` runs it."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.features(x).float()


class _ImageBatches:
    """The batches of an ImageData as float tensors on ``device``, converted one batch at a time."""

    def __init__(self, images, batch_size: int, device: torch.device) -> None:
        self.images, self.batch_size, self.device = images, batch_size, device

    def __len__(self) -> int:
        return math.ceil(len(self.images) / self.batch_size)

    def __iter__(self):
        for i in range(0, len(self.images), self.batch_size):
            yield self.images.float(slice(i, i + self.batch_size), device=self.device)


def extract_features(
    feature_net: nn.Module, images, *, batch_size: int = 256, progress: bool = False, desc: str = "features"
) -> torch.Tensor:
    """Features ``(N, D)`` (CPU, float32) of float images ``(N, C, H, W)`` or of an ImageData (converted per batch).

    ``feature_net.features`` run by :func:`refine.metrics.features.extract_features` (in eval
    mode, restored afterwards); no images give ``(0, feature_dim)``, NaN or inf features are a
    :class:`~refine.errors.NonFiniteError`.
    """
    if len(images) == 0:
        return torch.zeros(0, getattr(feature_net, "feature_dim", 0))
    if isinstance(images, ImageData):
        images = _ImageBatches(images, batch_size, module_device(feature_net))
    was = feature_net.training
    try:
        return _extract_features(
            _Features(feature_net).eval(), images, batch_size=batch_size, progress=progress, desc=desc
        )
    finally:
        feature_net.train(was)


@torch.no_grad()
def generated_features(
    generator,
    feature_net: nn.Module,
    n: int,
    *,
    rng,
    batch_size: int = 256,
    progress: bool = False,
    desc: str = "generated features",
) -> torch.Tensor:
    """Features of ``n`` fresh samples of ``generator`` (a LatentGenerator), without storing the images."""
    dev = module_device(feature_net)
    out = []
    feature_net.eval()
    for i in tqdm(range(0, n, batch_size), desc=desc, unit="batch", disable=not progress, leave=False):
        _, x = generator.sample(min(batch_size, n - i), rng=rng)
        out.append(feature_net.features(x.to(dev)).float().cpu())
    return torch.cat(out)


# --------------------------------------------------------------------------- step 1: the feature network
def train_feature_net(
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    arch: dict,
    epochs: int = 2,
    batch_size: int = 128,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    val: tuple[torch.Tensor, torch.Tensor] | None = None,
    rng: torch.Generator | None = None,
    device="cpu",
    progress: bool = False,
) -> tuple[nn.Module, dict]:
    """Train a feature network (e.g. ``resnet34-features``) as a classifier by cross-entropy.

    ``images``: uint8 ``(N, C, H, W)`` or float in [-1, 1]; ``labels``: ``(N,)`` class indices.
    Adam with a cosine learning-rate decay over all steps. Returns the network (eval mode,
    gradients off: frozen) and a report with per-epoch loss/accuracy and the validation
    accuracy when ``val`` is given.
    """

    if len(images) != len(labels):
        raise ShapeError(f"{len(images)} images but {len(labels)} labels")
    if epochs < 1 or batch_size < 1 or len(images) < batch_size:
        raise ConfigError(
            f"need epochs >= 1 and at least one batch: epochs={epochs}, batch_size={batch_size}, images={len(images)}"
        )
    num_classes = int(arch.get("kwargs", {}).get("num_classes", 10))
    if int(labels.max()) >= num_classes or int(labels.min()) < 0:
        raise DataError(
            f"labels range over [{int(labels.min())}, {int(labels.max())}] but the network has {num_classes} classes"
        )
    net = build_seeded(arch, rng).to(device)
    net.train()
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = len(images) // batch_size
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps_per_epoch)
    conv = (lambda t: to_float(t)) if images.dtype == torch.uint8 else (lambda t: t.float())
    history = []
    t0 = time.perf_counter()
    for epoch in range(epochs):
        perm = _perm(len(images), rng)
        tot_loss = tot_acc = 0.0
        bar = tqdm(
            range(steps_per_epoch),
            desc=f"feature net {epoch + 1}/{epochs}",
            unit="batch",
            disable=not progress,
            leave=False,
        )
        for s in bar:
            idx = perm[s * batch_size : (s + 1) * batch_size]
            x, y = conv(images[idx]).to(device), labels[idx].to(device)
            logits = net(x)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tot_loss += loss.item()
            tot_acc += (logits.argmax(1) == y).float().mean().item()
            if (s + 1) % 20 == 0:
                bar.set_postfix(loss=f"{tot_loss / (s + 1):.3f}", acc=f"{tot_acc / (s + 1):.3f}")
        history.append({"epoch": epoch + 1, "loss": tot_loss / steps_per_epoch, "acc": tot_acc / steps_per_epoch})
    net.eval().requires_grad_(False)
    report = {"history": history, "train_time_s": time.perf_counter() - t0, "n_train": len(images)}
    if val is not None:
        report["val_acc"] = classifier_accuracy(net, *val)
        report["n_val"] = len(val[0])
    return net, report


def label_feature_net(
    train: ImageData,
    val: ImageData,
    arch: dict,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    rng,
    device,
    progress: bool,
) -> tuple[nn.Module, dict]:
    """:func:`train_feature_net` as a classifier of ``train``'s labels, validated on ``val``'s (DRE-F-SP's
    and cDR-RS's feature network); the report says its target."""
    net, report = train_feature_net(
        train.images,
        train.labels,
        arch=arch,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        val=(val.images, val.labels),
        rng=rng,
        device=device,
        progress=progress,
    )
    return net, {**report, "target": "class labels"}


@torch.no_grad()
def classifier_accuracy(net: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, batch_size: int = 512) -> float:

    dev = module_device(net)
    correct = 0
    for i in range(0, len(images), batch_size):
        x = images[i : i + batch_size]
        x = to_float(x) if x.dtype == torch.uint8 else x.float()
        correct += int((net(x.to(dev)).argmax(1).cpu() == labels[i : i + batch_size]).sum())
    return correct / max(len(images), 1)


# --------------------------------------------------------------------------- step 2: the ratio head
@torch.no_grad()
def _val_loss(
    head: nn.Module, f_real: torch.Tensor, f_fake: torch.Tensor, activation: str, batch: int = 8192
) -> tuple[float, float]:
    """(SP loss without penalty, mean r on generated) on validation features."""
    dev = module_device(head)
    rr = torch.cat([_activate(head(f_real[i : i + batch].to(dev)), activation) for i in range(0, len(f_real), batch)])
    rf = torch.cat([_activate(head(f_fake[i : i + batch].to(dev)), activation) for i in range(0, len(f_fake), batch)])
    return float(sp_loss(rr, rf, 0.0)), float(rf.mean())


def fit_ratio_head(
    f_real: torch.Tensor,
    f_fake: torch.Tensor,
    f_real_val: torch.Tensor,
    f_fake_val: torch.Tensor,
    *,
    lambdas: Sequence[float] = DEFAULT_LAMBDAS,
    hidden=(512, 256),
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
    """Train one head per ``lambda`` on cached features; keep the best normalised one.

    Each epoch passes over the generated features once, each step pairing a batch of them
    with a random batch of real features. A density ratio integrates to one under the
    generator, ``E_G[r] = 1``; the kept head is the one with the lowest validation SP loss
    among those whose mean ``r`` on the validation generated features is within ``norm_tol``
    of 1 (what the penalty ``lambda (E_G[r] - 1)^2`` is for). When no lambda gets there, the
    head with the lowest validation loss is kept and the report carries a ``warning``. Returns ``(head, arch
    config, report)``; the report lists, per lambda, the best validation loss, its epoch, the
    training loss and ``E_G[r]`` on validation features, and says whether the kept head is
    ``normalised``.
    """
    lambdas = check_head_options(norm_tol, activation, lambdas)
    dim = f_real.shape[1]
    for name, f in (
        ("real", f_real),
        ("generated", f_fake),
        ("validation real", f_real_val),
        ("validation generated", f_fake_val),
    ):
        if f.dim() != 2 or f.shape[1] != dim or len(f) == 0:
            raise ShapeError(f"{name} features must be (N>0, {dim}); got {tuple(f.shape)}")
    if epochs < 1 or batch_size < 1 or len(f_fake) < batch_size:
        raise ConfigError(
            f"need epochs >= 1 and at least one batch of generated features: epochs={epochs}, batch_size={batch_size}, n={len(f_fake)}"
        )
    cfg = arch_config("ratio-head", in_dim=dim, hidden=list(hidden), dropout=dropout)
    f_real, f_fake = f_real.to(device), f_fake.to(device)
    steps = len(f_fake) // batch_size

    def train_epoch(head: nn.Module, opt, lam: float, epoch: int) -> float:
        perm_f = _perm(len(f_fake), rng).to(device)
        idx_r = torch.randint(
            0, len(f_real), (steps * batch_size,), generator=rng, device=rng.device if rng is not None else "cpu"
        ).to(device)
        tot = 0.0
        for s in tqdm(
            range(steps), desc=f"ratio head lambda={lam:g} {epoch + 1}/{epochs}", disable=not progress, leave=False
        ):
            rf = _activate(head(f_fake[perm_f[s * batch_size : (s + 1) * batch_size]]), activation)
            rr = _activate(head(f_real[idx_r[s * batch_size : (s + 1) * batch_size]]), activation)
            loss = sp_loss(rr, rf, lam)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            tot += loss.item()
        return tot / steps

    def validate(head: nn.Module) -> tuple[float, dict]:
        vl, mean_rf = _val_loss(head, f_real_val, f_fake_val, activation)
        return vl, {"val_mean_r_fake": mean_rf}

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
        what="ratio head",
    )
    return head, cfg, report


# --------------------------------------------------------------------------- the whole recipe
def fit_dre_f_sp(
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
    lambdas: Sequence[float] = DEFAULT_LAMBDAS,
    activation: str = "softplus",
    rng: torch.Generator | None = None,
    device="cpu",
    progress: bool = False,
) -> tuple[FeatureRatio, dict]:
    """Fit a DRE-F-SP ratio for ``generator`` (a LatentGenerator) against ``real`` (an ImageData).

    ``n_val`` real images are held out (and as many generated ones drawn) to choose lambda and
    the epoch; the rest train the head against ``n_fake`` generated images (default: as many
    as real ones). Without ``feature_net``, one is trained from ``feature_arch`` on the same
    training images: as a classifier of the dataset's labels, or, for unlabelled data, to tell
    real from generated images (real images are then split in half between the feature network
    and the head, so the head never sees images the features were fitted on).

    Returns the ratio (networks in eval mode without gradients, on ``device``) and a report
    whose ``archs`` entry holds the architecture configs needed to save it.
    """

    if not isinstance(real, ImageData):
        raise ConfigError("real must be an ImageData (see refine.data.images.load_images)")
    if n_val < 2 or n_val >= len(real) - 1:
        raise ConfigError(f"n_val must be in [2, {len(real) - 2}] for {len(real)} real images, got {n_val}")
    x_shape = tuple(generator.sample(1, rng=rng)[1].shape[1:])
    if x_shape != tuple(real.images.shape[1:]):
        raise ShapeError(
            f"the generator makes images {x_shape} but the data holds {tuple(real.images.shape[1:])}; load the data with the generator's "
            "image size and channels"
        )
    report: dict = {"real": real.describe()}
    val, train = real.random_split(n_val, rng=rng)
    feature_batch_size = min(
        feature_batch_size, len(train) // 2 if real.labels is None else len(train)
    )  # tiny datasets: one batch
    if feature_net is None:
        if feature_arch is None:
            raise ConfigError("pass a trained feature_net or a feature_arch to train one")
        if real.labels is not None:
            feature_net, frep = label_feature_net(
                train, val, feature_arch, epochs=feature_epochs, batch_size=feature_batch_size, lr=feature_lr,
                rng=rng, device=device, progress=progress,
            )  # fmt: skip
        else:
            half, train = train.random_split(len(train) // 2, rng=rng)
            with torch.no_grad():
                fake = torch.cat(
                    [generator.sample(min(512, len(half) - i), rng=rng)[1].cpu() for i in range(0, len(half), 512)]
                )
            imgs = torch.cat([half.float(), fake.float()])
            labs = torch.cat([torch.zeros(len(half), dtype=torch.long), torch.ones(len(fake), dtype=torch.long)])
            arch = {**feature_arch, "kwargs": {**feature_arch.get("kwargs", {}), "num_classes": 2}}
            feature_net, frep = train_feature_net(
                imgs,
                labs,
                arch=arch,
                epochs=feature_epochs,
                batch_size=feature_batch_size,
                lr=feature_lr,
                rng=rng,
                device=device,
                progress=progress,
            )
            feature_arch = arch
            frep["target"] = "real vs generated (unlabelled data)"
        report["feature_net"] = frep
    else:
        feature_net = feature_net.to(device).eval().requires_grad_(False)
        report["feature_net"] = {"target": "given"}
    feature_net.eval().requires_grad_(False)
    n_fake = len(train) if n_fake is None else int(n_fake)
    t0 = time.perf_counter()
    f_real = extract_features(feature_net, train, progress=progress, desc="real features")
    f_real_val = extract_features(feature_net, val, progress=progress, desc="validation real features")
    f_fake = generated_features(generator, feature_net, n_fake, rng=rng, progress=progress)
    f_fake_val = generated_features(
        generator, feature_net, n_val, rng=rng, progress=progress, desc="validation generated features"
    )
    report["feature_time_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    head, head_arch, hrep = fit_ratio_head(
        f_real,
        f_fake,
        f_real_val,
        f_fake_val,
        lambdas=lambdas,
        hidden=head_hidden,
        activation=activation,
        epochs=head_epochs,
        batch_size=head_batch_size,
        lr=head_lr,
        rng=rng,
        device=device,
        progress=progress,
    )
    hrep["train_time_s"] = time.perf_counter() - t0
    report["head"] = hrep
    report["archs"] = {"feature_net": feature_arch, "head": head_arch}
    ratio = FeatureRatio(feature_net, head.to(device), activation=activation, image_size=int(real.images.shape[-1]))
    return ratio, report
