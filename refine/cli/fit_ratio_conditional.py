"""``refine fit-ratio --kind discriminator --conditional``: a class-conditional checkpoint's discriminator as ``log r(x | y)``.

DRS's protocol, class by class: the checkpoint's discriminator ``D(x, y)`` is trained on with the
logistic loss against the fixed generator (real and generated batches share the real batch's
labels, :func:`refine.train.cgan.fit_conditional_discriminator`), so that its logit estimates
``log p(x | y) / p_G(x | y)`` whatever loss the GAN was trained with (the hinge loss does not make
it one); then, optionally, one calibration per class (:func:`refine.conditional.calibrate_per_class`)
fitted on held-out labelled images. The result is a ``discriminator-conditional`` ratio file for
``refine sample --ratio FILE --classes ...``.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import torch
import typer

from ..conditional import ConditionalDiscriminatorRatio, calibrate_per_class
from ..data.images import is_image_spec, load_images
from ..errors import ConfigError
from ..io import save_conditional_discriminator_ratio
from ..train.cgan import fit_conditional_discriminator
from .common import make_rng, prepare_out_dir, resolve_device, timestamp, versions
from .inputs import load_inputs

__all__ = ["fit_conditional_discriminator_ratio"]


def fit_conditional_discriminator_ratio(a: dict) -> None:
    """The ``--conditional`` branch of ``refine fit-ratio --kind discriminator`` (``a``: the command's arguments)."""
    ckpt, out, seed, calibration = a["ckpt"], a["out"], a["seed"], a["calibration"]
    if a["foreign"] is not None and a["foreign"].disc is not None:
        raise ConfigError(
            "--conditional --kind discriminator fine-tunes the conditional checkpoint's own discriminator; --disc is for unconditional generators"
        )
    if a["patience"]:
        raise ConfigError(
            "--patience is not available with --conditional --kind discriminator; set the number of epochs with --epochs"
        )
    if a["epochs"] < 0 or a["n_train"] <= 0 or a["n_calib"] <= 1:
        raise ConfigError("--epochs must be >= 0, --n-train > 0 and --n-calib > 1")
    if calibration not in ("none", "logistic", "isotonic"):
        raise ConfigError(f"unknown --calibration {calibration!r}; valid: none, logistic, isotonic")
    dev = resolve_device(a["device"])
    prepare_out_dir(out.parent if str(out.parent) else Path("."))
    inputs = load_inputs(ckpt, None, dev, need_ratio=False, foreign=a["foreign"])
    G, D = inputs.gan.generator, inputs.gan.discriminator
    if D is None:
        raise ConfigError(
            f"{ckpt} holds no discriminator; fit a conditional ratio with --kind feature-sp --conditional"
        )
    data = a["data"] or inputs.dataset
    if data is None or not is_image_spec(data):
        raise ConfigError(
            f"--conditional needs the labelled image dataset the generator was trained on (--data NAME:ROOT); got {data!r}"
        )
    k = G.num_classes
    x0 = G.at(0).sample(1, rng=make_rng(0))[1]
    c, h = int(x0.shape[1]), int(x0.shape[2])
    rng = make_rng(seed)
    n_cal = a["n_calib"] if calibration != "none" else 0
    pool = load_images(
        data, split="train", image_size=h, channels=c, limit=a["n_train"] + n_cal, rng=rng, progress=a["progress"]
    )
    if pool.labels is None:
        raise ConfigError(
            f"{data} has no class labels; the conditional discriminator compares real and generated images class by class"
        )
    if pool.num_classes != k or int(pool.labels.max()) >= k:
        raise ConfigError(f"{data} has {pool.num_classes} classes but the generator in {ckpt} has {k}")
    if len(pool) < n_cal + a["batch_size"]:
        raise ConfigError(
            f"{data} has {len(pool)} training images: too few for --n-calib {n_cal} plus one batch of {a['batch_size']}"
        )
    calib, train = pool.random_split(n_cal, rng=rng)
    net = copy.deepcopy(D)
    t0 = time.perf_counter()
    history = fit_conditional_discriminator(
        G,
        net,
        train,
        epochs=a["epochs"],
        batch_size=a["batch_size"],
        lr=a["lr"],
        rng=rng,
        device=dev,
        progress=a["progress"],
    )
    fit_time = time.perf_counter() - t0
    cond = inputs.gan.config["conditional"]
    ratio = ConditionalDiscriminatorRatio(net, k, "logit", label=cond.get("label", "index"))
    report = None
    if calibration != "none":
        real, real_y = calib.float(device=dev), calib.labels
        with torch.no_grad():
            fake = torch.cat(
                [
                    G(G.prior.sample(len(y), rng=rng, device=dev), y.to(dev))
                    for y in torch.split(real_y, a["batch_size"])
                ]
            )
        ratio, report = calibrate_per_class(ratio, real, real_y, fake, real_y, calibration, rng=rng)
    meta = {
        "checkpoint": inputs.provenance["checkpoint"],
        "dataset": data,
        "conditional": True,
        "epochs": a["epochs"],
        "n_train": len(train),
        "batch_size": a["batch_size"],
        "lr": a["lr"],
        "calibration": report,
        "history": history,
        "fit_time_s": fit_time,
        "seed": seed,
        "versions": versions(),
        "time": timestamp(),
    }
    save_conditional_discriminator_ratio(out, ratio, inputs.gan.config["discriminator"]["arch"], meta=meta)
    msg = f"fitted the checkpoint's conditional discriminator as the ratio r(x | y) for {k} classes ({a['epochs']} epochs in {fit_time:.0f} s"
    if history:
        msg += f", final loss {history[-1]['loss_d']:.3f}, accuracy {history[-1]['acc']:.3f}"
    if report:
        per = report["per_class"].values()
        mean = {w: sum(r[w]["brier"] for r in per) / k for w in ("before", "after")}
        msg += f"; {calibration} calibration per class: mean Brier {mean['before']:.4f} -> {mean['after']:.4f}"
    typer.echo(msg + f") -> {out}")
