"""``refine fit-ratio``: fit a density ratio for a fixed generator and save it."""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Optional

import torch
import typer

from ..data.images import is_image_spec, load_images
from ..data.toy2d import MIXTURES, get_mixture
from ..errors import ConfigError
from ..io import save_discriminator_ratio
from ..nets import arch_config, build_from_config
from ..ratio.calibration import calibrate
from ..ratio.discriminator import DiscriminatorRatio
from ..samplers.rejection import RejectionSampler, acceptance_rate
from ..train.gan import REFIT_LR, REFIT_MAX_EPOCHS, REFIT_MIN_DELTA, REFIT_PATIENCE, fit_discriminator
from .app import app
from .common import cli_errors, make_rng, prepare_out_dir, resolve_device, timestamp, versions
from .fit_foreign import _AsLogit, _foreign_copy, _refine_arch, _save_user_arch
from .fit_ratio_conditional import fit_conditional_discriminator_ratio
from .fit_ratio_feature import fit_feature_sp_ratio, image_shape
from .inputs import Foreign, foreign_options, load_inputs
from .sample_conditional import is_conditional_checkpoint

#: Real samples held out by default (see --n-val).
N_VAL = 5000
#: The learning rate of a fresh discriminator, and of the conditional refit and feature-sp's head, when --lr is not given.
FRESH_LR = 1e-3


@app.command("fit-ratio")
@cli_errors
@foreign_options
def fit_ratio(
    ckpt: Path = typer.Option(..., "--ckpt", help="GAN checkpoint whose generator stays fixed"),
    kind: str = typer.Option(
        "discriminator", "--kind", help="ratio estimator: discriminator, or feature-sp (DRE-F-SP, images)"
    ),
    data: Optional[str] = typer.Option(
        None, "--data", help="real data: a 2-D dataset name or an image dataset NAME:ROOT (default: the checkpoint's)"
    ),
    epochs: Optional[int] = typer.Option(
        None,
        "--epochs",
        help="epochs of discriminator-only training against the fixed generator (0: none); with --patience, the cap "
        f"(default: {REFIT_MAX_EPOCHS} with early stopping, else 10)",
        show_default=False,
    ),
    patience: Optional[int] = typer.Option(
        None,
        "--patience",
        help="discriminator: stop after this many epochs without a lower held-out loss on --n-val real images or points, and keep the best epoch (0: train all --epochs) "
        f"(default: {REFIT_PATIENCE}; 0 with --conditional or --epochs 0)",
        show_default=False,
    ),
    min_delta: float = typer.Option(
        REFIT_MIN_DELTA,
        "--min-delta",
        help="discriminator with --patience: an epoch counts as better only when the held-out loss falls by more than this (nats)",
    ),
    n_train: int = typer.Option(
        50_000, "--n-train", help="real training points for a 2-D dataset, or at most this many training images"
    ),
    batch_size: int = typer.Option(512, "--batch-size"),
    lr: Optional[float] = typer.Option(
        None,
        "--lr",
        help="Adam learning rate of the discriminator (feature-sp: of the head) "
        f"(default: {REFIT_LR:g} to refit a discriminator; {FRESH_LR:g} for a fresh one, with --conditional, and for feature-sp's head)",
        show_default=False,
    ),
    lr_drop: Optional[int] = typer.Option(
        None, "--lr-drop", help="divide the learning rate by 10 after this many epochs"
    ),
    calibration: str = typer.Option(
        "none", "--calibration", help="none, logistic or isotonic (fitted on held-out real vs generated samples)"
    ),
    n_calib: int = typer.Option(10_000, "--n-calib", help="held-out real and generated samples for calibration"),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("auto", "--device"),
    out: Path = typer.Option(Path("runs/ratio.pt"), "--out", help="ratio file"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    feature_net: Optional[Path] = typer.Option(
        None, "--feature-net", help="feature-sp: reuse the frozen feature network of this feature-sp ratio file"
    ),
    feature_epochs: int = typer.Option(
        2, "--feature-epochs", help="feature-sp: epochs of classifier training of the ResNet-34 feature network"
    ),
    feature_widths: str = typer.Option(
        "64,128,256,512", "--feature-widths", help="feature-sp: channels of the four ResNet-34 stages"
    ),
    feature_dim: int = typer.Option(256, "--feature-dim", help="feature-sp: size of the feature space"),
    stem_stride: int = typer.Option(
        1, "--stem-stride", help="feature-sp: stride of the 3x3 CIFAR-style stem (2 quarters the cost)"
    ),
    head_hidden: str = typer.Option("512,256", "--head-hidden", help="feature-sp: hidden sizes of the ratio head MLP"),
    lambdas: str = typer.Option(
        "0,0.01,0.1,1", "--lambdas", help="feature-sp: penalty weights tried; the best on validation data is kept"
    ),
    n_val: Optional[int] = typer.Option(
        None,
        "--n-val",
        help="real samples held out (with as many generated): feature-sp chooses lambda on them, discriminator with --patience stops on them "
        f"(default: {N_VAL}; a discriminator on fewer images: a fifth of those left after --n-calib)",
        show_default=False,
    ),
    activation: str = typer.Option(
        "softplus", "--activation", help="feature-sp: non-negative output of the head: softplus or relu"
    ),
    conditional: bool = typer.Option(
        False,
        "--conditional",
        help="a class-conditional checkpoint (refine train --method cgan) and labelled data: one ratio r(x | y) for all classes; feature-sp: cDR-RS's, discriminator: the checkpoint's D(x, y) refitted, calibrated per class",
    ),
    foreign: Foreign = None,
) -> None:
    """Fit a density ratio for the checkpoint's fixed generator and save it for `refine sample --ratio`.

    --kind discriminator fine-tunes the checkpoint's discriminator (DRS), or a foreign one given
    with --disc/--disc-arch/--disc-output, optionally calibrated (MH-GAN); a WGAN critic
    fine-tuned this way becomes a logit. --kind feature-sp trains DRE-F-SP on an image dataset: a ResNet-34 feature
    network (classifier on the labels, or real vs generated for unlabelled data) and a ratio
    head with the SP loss; --epochs and --batch-size then apply to the head. With --conditional
    (a class-conditional checkpoint and labelled data) the head also takes the label, and one
    ratio r(x | y) is fitted for all classes (cDR-RS), for `refine sample --ratio --classes`;
    --kind discriminator --conditional refits the checkpoint's D(x, y) with the logistic loss and
    calibrates it per class.

    A foreign generator (--arch, TorchScript, torch.export; see `refine sample --help`) works
    with both kinds; it carries no discriminator and no dataset, so --data is required and
    --kind discriminator trains a fresh MLP discriminator (2-D data only).
    """
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder; give the ratio file's name, e.g. {out / 'ratio.pt'}")
    lr_given = lr is not None
    epochs, patience, lr = _unset_flags(kind, conditional, epochs, patience, lr)
    n_val_given, n_val = n_val is not None, N_VAL if n_val is None else n_val
    if not lr > 0:
        raise ConfigError(f"--lr must be > 0, got {lr}")
    foreign_disc = foreign is not None and foreign.disc is not None
    if foreign_disc and kind != "discriminator":
        raise ConfigError("--disc is fine-tuned by --kind discriminator; --kind feature-sp trains its own networks")
    if patience < 0 or (patience > 0 and n_val < 2):
        raise ConfigError(f"--patience must be >= 0 (and needs --n-val >= 2), got {patience}")
    if not (min_delta >= 0 and min_delta < float("inf")):
        raise ConfigError(f"--min-delta must be a finite number >= 0, got {min_delta}")
    if kind not in ("discriminator", "feature-sp"):
        raise ConfigError(f"unknown --kind {kind!r}; valid: discriminator, feature-sp")
    conditional_ckpt = is_conditional_checkpoint(ckpt)
    if conditional and not conditional_ckpt:
        raise ConfigError(
            f"--conditional fits a ratio r(x | y) for a class-conditional generator (refine train --method cgan); {ckpt} is unconditional"
        )
    if conditional_ckpt and not conditional:
        raise ConfigError(
            f"{ckpt} is class-conditional: add --conditional to fit one conditional ratio r(x | y) for all its classes"
        )
    if kind == "feature-sp":
        return fit_feature_sp_ratio(locals())
    if conditional:
        return fit_conditional_discriminator_ratio(locals())
    if calibration not in ("none", "logistic", "isotonic"):
        raise ConfigError(f"unknown --calibration {calibration!r}; valid: none, logistic, isotonic")
    if epochs < 0 or n_train <= 0 or n_calib <= 1:
        raise ConfigError("--epochs must be >= 0, --n-train > 0 and --n-calib > 1")
    user_arch = foreign_disc and not _refine_arch(foreign.disc_arch)
    if user_arch and calibration == "isotonic":
        raise ConfigError(
            "a discriminator of your own --disc-arch is saved as its weights, used through --disc with --disc-temperature; "
            "isotonic calibration cannot be expressed that way: use --calibration logistic or none"
        )
    if user_arch and not out.name.endswith(".safetensors"):
        raise ConfigError(
            f"a discriminator of your own --disc-arch is saved as a safetensors state_dict; name --out FILE.safetensors, got {out.name}"
        )
    dev = resolve_device(device)
    prepare_out_dir(out.parent if str(out.parent) else Path("."))
    inputs = load_inputs(ckpt, None, dev, need_ratio=False, foreign=foreign)
    data = data or inputs.dataset
    if data is None:
        raise ConfigError(
            f"{ckpt} does not name the dataset it was trained on; pass --data (a 2-D dataset name or NAME:ROOT)"
        )
    images = is_image_spec(data)
    if data not in MIXTURES and not images:
        raise ConfigError(
            f"--data {data!r} is neither a 2-D dataset ({', '.join(MIXTURES)}) nor an image dataset NAME:ROOT"
        )
    rng = make_rng(seed)
    G = inputs.gan.generator
    if images:  # real images: n_calib held out for calibration, up to n_train for fitting
        if inputs.gan.discriminator is None and not foreign_disc:
            raise ConfigError(
                f"{ckpt} holds no discriminator on images; pass one with --disc/--disc-arch/--disc-output, or use --kind feature-sp"
            )
        c, h, _ = image_shape(G, data, ckpt)
        n_cal = n_calib if calibration != "none" else 0
        n_hold = n_val if patience else 0
        pool = load_images(
            data, split="train", image_size=h, channels=c, limit=n_train + n_cal + n_hold, rng=rng, progress=progress
        )
        if n_hold and not n_val_given and len(pool) < n_cal + n_hold + batch_size:  # a small dataset: hold out a fifth
            n_hold = max(2, (len(pool) - n_cal) // 5)
        if len(pool) < n_cal + n_hold + batch_size:
            raise ConfigError(
                f"{data} has {len(pool)} training images: too few for --n-calib {n_cal} and --n-val {n_hold} plus one batch of {batch_size}"
            )
        calib_images, train_images = pool.random_split(n_cal, rng=rng)
        if n_hold:
            val_images, train_images = train_images.random_split(n_hold, rng=rng)
        mixture = None
    else:
        mixture = get_mixture(data)
        shape = tuple(G.sample(1, rng=make_rng(seed))[1].shape[1:])
        if shape != (2,):
            raise ConfigError(
                f"--data {data} is a 2-D dataset but the generator in {ckpt} makes samples of shape {shape}; pass its image dataset NAME:ROOT"
            )
    if foreign_disc:
        D, d_arch, output = _foreign_copy(inputs.ratio, foreign)
    elif inputs.gan.discriminator is not None:
        D, d_arch, output = (
            copy.deepcopy(inputs.gan.discriminator),
            inputs.gan.config["discriminator"]["arch"],
            inputs.gan.ratio.output,
        )
    else:
        # VEEGAN, LBT: no discriminator on x in the checkpoint; train a fresh MLP one against the generator.
        if epochs == 0:
            raise ConfigError(f"{ckpt} holds no discriminator on x; a fresh one is trained, so --epochs must be > 0")
        lr = lr if lr_given else FRESH_LR  # trained from scratch, not refitted
        g_kwargs = ((inputs.gan.config.get("generator") or {}).get("arch") or {}).get("kwargs") or {}
        d_arch = arch_config(
            "mlp",
            in_dim=mixture.means_tensor().shape[1],
            out_dim=1,
            hidden=int(g_kwargs.get("hidden", 100)),
            depth=int(g_kwargs.get("depth", 3)),
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            D = build_from_config(d_arch).to(dev)
        output = "logit"
    real_train = train_images.float(device=dev) if images else mixture.sample(n_train, rng=rng).to(dev)
    val = None
    if patience:
        val = val_images.float(device=dev) if images else mixture.sample(n_val, rng=rng).to(dev)
    t0 = time.perf_counter()
    history = fit_discriminator(
        G,
        _AsLogit(D, output),
        real_train,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        lr_drop_epoch=lr_drop,
        val=val,
        patience=patience or None,
        min_delta=min_delta,
        rng=rng,
        progress=progress,
    )
    fit_time = time.perf_counter() - t0
    D.eval().requires_grad_(False)
    if epochs > 0 and output == "critic":  # trained with the logistic loss: its value is now a logit
        output = "logit"
    ratio = DiscriminatorRatio(D, output)
    report = None
    if calibration != "none":
        real = calib_images.float(device=dev) if images else mixture.sample(n_calib, rng=rng).to(dev)
        _, fake = G.sample(len(real), rng=rng)
        ratio, report = calibrate(ratio, real, fake, calibration, rng=rng)
        rs_cost = exact_rs_cost(ratio, fake.split(batch_size))
        del fake
    else:
        batches = (G.sample(min(batch_size, n_calib - i), rng=rng)[1] for i in range(0, n_calib, batch_size))
        rs_cost = exact_rs_cost(ratio, batches)
    meta = {
        "checkpoint": inputs.provenance["checkpoint"],
        "fresh_discriminator": inputs.gan.discriminator is None,
        "dataset": data,
        "epochs": epochs,
        "n_train": len(real_train),
        "batch_size": batch_size,
        "lr": lr,
        "lr_drop": lr_drop,
        "calibration": report,
        "history": history,
        "patience": patience,
        "min_delta": min_delta if patience else None,
        "n_val": len(val) if val is not None else 0,
        "epochs_run": len(history),
        "best_epoch": history[-1].get("best_epoch") if history else None,
        "fit_time_s": fit_time,
        "exact_rs": rs_cost,
        "seed": seed,
        "versions": versions(),
        "time": timestamp(),
    }
    whose = "the foreign" if foreign_disc else ("a fresh" if inputs.gan.discriminator is None else "the checkpoint")
    if user_arch:
        _save_user_arch(out, ratio, meta, foreign)
    else:
        save_discriminator_ratio(out, ratio, d_arch, meta=meta)
    msg = f"fitted {whose} discriminator as the ratio ({len(history)} of {epochs} epochs in {fit_time:.0f} s"
    if history and history[-1].get("best_epoch"):
        msg += f", best held-out loss at epoch {history[-1]['best_epoch']} ({min(h['val_loss'] for h in history):.3f})"
    if history:
        msg += f", final loss {history[-1]['loss_d']:.3f}, accuracy {history[-1]['acc']:.3f}"
    if report:
        msg += f"; {calibration} calibration: Z {report['before']['z']:.2f} -> {report['after']['z']:.2f}, Brier {report['before']['brier']:.4f} -> {report['after']['brier']:.4f}"
    typer.echo(msg + f") -> {out}")
    typer.echo(_rs_advice(rs_cost))


def exact_rs_cost(ratio, batches) -> dict:
    """What rs costs with ``ratio``, in proposals per sample, on generated samples (``batches`` of them): exact
    (``M`` the largest ratio among them: a lower bound, as ``M`` grows with more proposals) and with ``M`` at
    their 99th percentile (``-o m_quantile=0.99``)."""
    with torch.no_grad():
        lw = torch.cat([ratio.log_ratio(c) for c in batches])
    return {
        "samples": len(lw),
        "proposals_per_sample": 1.0 / acceptance_rate(lw, 1.0),
        "proposals_per_sample_m_quantile_0.99": 1.0 / acceptance_rate(lw, 0.99),
    }


def _rs_advice(cost: dict) -> str:
    """One line on what exact rs would cost with the new ratio, against its default budget."""
    exact, capped, budget = (
        cost["proposals_per_sample"],
        cost["proposals_per_sample_m_quantile_0.99"],
        RejectionSampler().budget,
    )
    line = (
        f"exact rs: at least {exact:,.0f} proposals per sample on {cost['samples']:,} generated samples "
        f"({capped:,.1f} with -o m_quantile=0.99)"
    )
    if exact > budget:
        line += (
            f"; above its default budget of {budget:,.0f}: rs's default bound will cap r (approximate, warned), "
            "-o m_quantile=1 would be refused; drs, mh and sir fit, or raise -o budget"
        )
    return line


def _unset_flags(
    kind: str, conditional: bool, epochs: int | None, patience: int | None, lr: float | None
) -> tuple[int, int, float]:
    """``--epochs``, ``--patience`` and ``--lr``, each left unset taken from what is fitted.

    An unconditional ``--kind discriminator`` is refitted at ``REFIT_LR`` with early stopping
    (``REFIT_PATIENCE``, at most ``REFIT_MAX_EPOCHS`` epochs; none with ``--epochs 0``; a fresh
    discriminator, known only once the checkpoint is read, then trains at ``FRESH_LR``); the
    conditional refit and feature-sp's head train 10 epochs at ``FRESH_LR`` (``--patience`` is not theirs).
    """
    refit = kind == "discriminator" and not conditional
    if patience is None:
        patience = REFIT_PATIENCE if refit and epochs != 0 else 0
    if lr is None:
        lr = REFIT_LR if refit else FRESH_LR
    if epochs is None:
        epochs = REFIT_MAX_EPOCHS if refit and patience > 0 else 10
    return epochs, patience, lr
