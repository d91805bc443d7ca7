"""The ``--kind feature-sp`` branch of ``refine fit-ratio``: DRE-F-SP (or cDR-RS with ``--conditional``) on images."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from ..conditional import fit_conditional_feature_ratio
from ..data.images import is_image_spec, load_images
from ..errors import ConfigError
from ..io import file_sha256, load_feature_net, save_conditional_feature_ratio, save_feature_ratio
from ..nets import arch_config
from ..ratio.feature import ACTIVATIONS
from ..ratio.fit_feature import fit_dre_f_sp
from .common import make_rng, prepare_out_dir, resolve_device, timestamp, versions
from .inputs import load_inputs

__all__ = ["fit_feature_sp_ratio", "image_shape"]


def image_shape(G, data: str, ckpt) -> tuple[int, int, int]:
    """``(C, H, W)`` of the generator's samples, or a one-line error when it does not make images."""
    shape = tuple(G.sample(1, rng=make_rng(0))[1].shape[1:])
    if len(shape) != 3:
        raise ConfigError(
            f"--data {data} is an image dataset but the generator in {ckpt} makes samples of shape {shape}, not images (C, H, W); "
            "pass the 2-D dataset it was trained on, or an image GAN"
        )
    return shape


def _int_list(text: str, what: str) -> list[int]:
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{what} must be comma-separated integers, got {text!r}") from None
    if not vals or any(v <= 0 for v in vals):
        raise ConfigError(f"{what} must be positive integers, got {text!r}")
    return vals


def fit_feature_sp_ratio(a: dict) -> None:
    """``refine fit-ratio --kind feature-sp``: DRE-F-SP on images (see :mod:`refine.ratio.feature`)."""

    ckpt, out, seed = a["ckpt"], a["out"], a["seed"]
    widths = _int_list(a["feature_widths"], "--feature-widths")
    hidden = _int_list(a["head_hidden"], "--head-hidden")
    if len(widths) != 4:
        raise ConfigError(f"--feature-widths needs the four ResNet-34 stage widths, got {a['feature_widths']!r}")
    try:
        lams = [float(v) for v in a["lambdas"].split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--lambdas must be comma-separated numbers, got {a['lambdas']!r}") from None
    if a["activation"] not in ACTIVATIONS:
        raise ConfigError(f"unknown --activation {a['activation']!r}; valid: {', '.join(ACTIVATIONS)}")
    if (
        a["epochs"] < 1
        or a["feature_epochs"] < 1
        or a["n_train"] <= 0
        or a["feature_dim"] <= 0
        or a["stem_stride"] not in (1, 2)
    ):
        raise ConfigError(
            "--epochs and --feature-epochs must be >= 1, --n-train and --feature-dim > 0, --stem-stride 1 or 2"
        )
    dev = resolve_device(a["device"])
    prepare_out_dir(out.parent if str(out.parent) else Path("."))
    inputs = load_inputs(ckpt, None, dev, need_ratio=False, foreign=a["foreign"])
    data = a["data"] or inputs.dataset
    if not is_image_spec(data):
        raise ConfigError(
            f"--kind feature-sp needs an image dataset NAME:ROOT (e.g. mnist:/data/mnist); got --data {data!r}"
        )
    rng = make_rng(seed)
    G = inputs.gan.generator
    c, h, w = image_shape(G.at(0) if a["conditional"] else G, data, ckpt)
    real = load_images(
        data, split="train", image_size=h, channels=c, limit=a["n_train"], rng=rng, progress=a["progress"]
    )
    conditional = a["conditional"]
    if conditional:
        k = G.num_classes
        if real.labels is None:
            raise ConfigError(
                f"--conditional compares real and generated images class by class, but {data} has no class labels; pass the labelled dataset the generator was trained on"
            )
        if real.num_classes != k or int(real.labels.max()) >= k:
            raise ConfigError(f"{data} has {real.num_classes} classes but the generator in {ckpt} has {k}")
    fnet, farch = (None, None)
    if a["feature_net"] is not None:
        fnet, farch = load_feature_net(a["feature_net"], device=dev)
    else:
        farch = arch_config(
            "resnet34-features",
            in_channels=int(c),
            num_classes=(G.num_classes if conditional else real.num_classes) or 2,
            feature_dim=a["feature_dim"],
            widths=widths,
            stem="cifar",
            stem_stride=a["stem_stride"],
        )
    fit, save = (
        (fit_conditional_feature_ratio, save_conditional_feature_ratio)
        if conditional
        else (fit_dre_f_sp, save_feature_ratio)
    )
    t0 = time.perf_counter()
    ratio, report = fit(
        G,
        real,
        feature_net=fnet,
        feature_arch=farch,
        n_val=a["n_val"],
        feature_epochs=a["feature_epochs"],
        head_epochs=a["epochs"],
        head_batch_size=a["batch_size"],
        head_lr=a["lr"],
        head_hidden=hidden,
        lambdas=lams,
        activation=a["activation"],
        rng=rng,
        device=dev,
        progress=a["progress"],
    )
    fit_time = time.perf_counter() - t0
    archs = report.pop("archs")
    meta = {
        "checkpoint": inputs.provenance["checkpoint"],
        "dataset": data,
        **({"conditional": True} if conditional else {}),
        "n_train": len(real),
        "seed": seed,
        "fit_time_s": fit_time,
        "feature_net_file": None
        if a["feature_net"] is None
        else {"path": str(a["feature_net"]), "sha256": file_sha256(a["feature_net"])},
        **report,
        "versions": versions(),
        "time": timestamp(),
    }
    save(out, ratio, feature_arch=archs["feature_net"], head_arch=archs["head"], meta=meta)
    acc = report["feature_net"].get("val_acc")
    acc_txt = f"feature net validation accuracy {acc:.3f}, " if acc is not None else ""
    head = report["head"]
    if real.info.get("converted_from"):
        typer.echo(f"note: {real.describe()}", err=True)
    if head.get("warning"):
        typer.echo(f"warning: {head['warning']}", err=True)
    what = f"the conditional DRE-F-SP ratio for {G.num_classes} classes" if conditional else "DRE-F-SP"
    mean = " averaged over classes" if conditional else ""
    typer.echo(
        f"fitted {what} ({acc_txt}lambda {head['lambda']:g}, validation SP loss {head['val_loss']:.4f}, "
        f"E_G[r] {head['val_mean_r_fake']:.3f}{mean}{'' if head.get('normalised') else ' (not normalised)'}; "
        f"{fit_time:.0f} s) -> {out}"
    )
