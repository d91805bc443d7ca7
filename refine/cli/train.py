"""``refine train``: train a generator (and its discriminator) into a refine checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..data.images import is_image_spec, load_images
from ..data.toy2d import MIXTURES
from ..errors import CheckpointError, ConfigError
from ..samplers import parse_options
from ..train.cgan import save_cgan_checkpoint, train_cgan
from ..train.checkpointing import read_training_state, training_state
from ..train.images import IMAGE_PROTOCOL, resume_settings, save_image_checkpoint, train_image_gan
from ..train.registry import get_method
from ..train.toy2d import TOY_PROTOCOL, save_toy_checkpoint, train_toy
from .app import app
from .common import cli_errors, echo_err, make_rng, prepare_out_dir, resolve_device, timestamp, versions


def _coerce_options(pairs: list[str]) -> dict:
    import json

    out = {}
    for k, v in parse_options(pairs).items():
        try:
            out[k] = json.loads(v)
        except ValueError:
            out[k] = v
    return out


# Settings a resumed run takes from its checkpoint: (CLI parameter, meta key).
_RESUMED = [
    ("method", "method"),
    ("data", "dataset"),
    ("n_train", "n_train"),
    ("batch_size", "batch_size"),
    ("hidden", "hidden"),
    ("latent_dim", "latent_dim"),
    ("seed", "seed"),
]


def _resume_settings(ctx: typer.Context, resume: Path, given: dict) -> tuple[dict, dict]:
    """Settings and training state of the run in ``resume``; an explicit option that disagrees is an error."""
    ckpt, state = read_training_state(resume)
    meta = ckpt.get("meta") or {}
    settings = {}
    for param, key in _RESUMED:
        if key not in meta:
            raise CheckpointError(
                f"{resume}: its record lacks {key!r}, so the run cannot be repeated exactly; start a new run"
            )
        stored = meta[key]
        explicit = (
            getattr(ctx.get_parameter_source(param), "name", None) == "COMMANDLINE"
        )  # typer may vendor its own click
        if explicit and given[param] != stored:
            raise ConfigError(
                f"--{param.replace('_', '-')} {given[param]} disagrees with the run being resumed ({stored}); "
                "drop the option: a resumed run keeps its settings"
            )
        settings[param] = stored
    options = dict(meta.get("options") or {})
    for k, v in given["options"].items():
        if options.get(k) != v:
            raise ConfigError(
                f"-o {k}={v} disagrees with the run being resumed ({k}={options.get(k)!r}); drop the option: a resumed run keeps its settings"
            )
    settings["options"] = options
    settings["depth"] = meta.get("depth", TOY_PROTOCOL["depth"])
    return settings, state


@app.command()
@cli_errors
def train(
    ctx: typer.Context,
    method: str = typer.Option("gan", "--method", "-m", help="training method: see `refine list`"),
    data: str = typer.Option(
        "grid25", "--data", help="2-D dataset name (see `refine list`) or an image dataset NAME:ROOT"
    ),
    epochs: int = typer.Option(10, "--epochs", help="training epochs"),
    n_train: int = typer.Option(TOY_PROTOCOL["n_train"], "--n-train", help="training points drawn from a 2-D mixture"),
    batch_size: int = typer.Option(TOY_PROTOCOL["batch_size"], "--batch-size"),
    hidden: int = typer.Option(TOY_PROTOCOL["hidden"], "--hidden", help="hidden width of the 2-D MLPs"),
    latent_dim: int = typer.Option(2, "--latent-dim", help="size of the normal latent z"),
    option: list[str] = typer.Option(
        [], "--option", "-o", help="method option key=value (JSON values), e.g. -o lr=1e-4"
    ),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("auto", "--device"),
    out: Path = typer.Option(Path("runs/train/gan.pt"), "--out", help="checkpoint path"),
    every: int = typer.Option(
        1, "--every", help="write the checkpoint (with the state to resume from) every N epochs; 0: only at the end"
    ),
    resume: Optional[Path] = typer.Option(
        None,
        "--resume",
        help="continue the run saved in this checkpoint up to --epochs (its settings and seed are kept)",
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    image_size: Optional[int] = typer.Option(
        None, "--image-size", help="images: resize the data to 28, 32 or 64 px (default: as stored)"
    ),
    channels: Optional[int] = typer.Option(
        None, "--channels", help="images: convert the data to 1 or 3 channels (default: as stored)"
    ),
    width: int = typer.Option(64, "--width", help="images: channel width of the DCGAN generator"),
    d_width: int = typer.Option(64, "--d-width", help="images: channel width of the DCGAN discriminator"),
    d_norm: str = typer.Option(
        "spectral", "--d-norm", help="images: discriminator normalisation: spectral, batch or none"
    ),
) -> None:
    """Train a GAN on a 2-D mixture or on images (--data NAME:ROOT, e.g. mnist:/data/mnist) into a checkpoint for `refine sample --ckpt`.

    The checkpoint is rewritten atomically every --every epochs and holds the optimizer
    and random-number state: after an interrupt, `--resume` continues exactly where the
    last checkpoint stopped.
    """
    options = _coerce_options(option)
    if is_image_spec(data) or (
        resume is not None and is_image_spec((read_training_state(resume)[0].get("meta") or {}).get("dataset"))
    ):
        return _train_images(ctx, locals())
    if image_size is not None or channels is not None:
        raise ConfigError("--image-size and --channels apply to image datasets (--data NAME:ROOT)")
    if every < 0:
        raise ConfigError(f"--every must be >= 0 (0: write the checkpoint only at the end), got {every}")
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder; give the checkpoint's file name, e.g. {out / 'gan.pt'}")
    state = None
    depth = TOY_PROTOCOL["depth"]
    if resume is not None:
        given = {
            "method": method,
            "data": data,
            "n_train": n_train,
            "batch_size": batch_size,
            "hidden": hidden,
            "latent_dim": latent_dim,
            "seed": seed,
            "options": options,
        }
        settings, state = _resume_settings(ctx, resume, given)
        method, data, n_train, batch_size = (
            settings["method"],
            settings["data"],
            settings["n_train"],
            settings["batch_size"],
        )
        hidden, latent_dim, seed, options, depth = (
            settings["hidden"],
            settings["latent_dim"],
            settings["seed"],
            settings["options"],
            settings["depth"],
        )
        if state["epoch"] >= epochs:
            raise ConfigError(
                f"{resume} has already completed {state['epoch']} epochs; ask for more with --epochs (now {epochs})"
            )
    if getattr(get_method(method), "conditional", False):
        raise ConfigError(
            f"training method {method!r} trains class-conditional networks on labelled images; pass --data NAME:ROOT, e.g. mnist:../shared/data/mnist"
        )
    if data not in MIXTURES:
        raise ConfigError(f"unknown --data {data!r}; 2-D datasets: {', '.join(MIXTURES)}")
    if epochs <= 0 or n_train <= 0 or batch_size <= 0 or latent_dim <= 0 or hidden <= 0:
        raise ConfigError("--epochs, --n-train, --batch-size, --hidden and --latent-dim must be positive")
    dev = resolve_device(device)
    prepare_out_dir(out.parent if str(out.parent) else Path("."))
    rng = make_rng(seed)
    saved = {"epoch": state["epoch"] if state is not None else 0}

    def checkpoint(epoch: int, run, trainer) -> None:
        if epoch == epochs or (every and epoch % every == 0):
            save_toy_checkpoint(
                out,
                run,
                meta={"seed": seed, "epochs_done": epoch, "versions": versions(), "time": timestamp()},
                train_state=training_state(trainer, epoch=epoch, rng=rng, history=run.meta["history"]),
            )
            saved["epoch"] = epoch

    try:
        run = train_toy(
            data,
            epochs=epochs,
            n_train=n_train,
            method=method,
            hidden=hidden,
            depth=depth,
            batch_size=batch_size,
            latent_dim=latent_dim,
            rng=rng,
            device=dev,
            progress=progress,
            method_options=options,
            init_seed=seed,
            resume=state,
            on_epoch=checkpoint,
        )
    except KeyboardInterrupt:
        if saved["epoch"] and out.is_file():
            echo_err(
                f"interrupted; {out} holds the run after epoch {saved['epoch']} (intact); continue with: "
                f"refine train --resume {out} --out {out} --epochs {epochs}"
            )
        else:
            echo_err("interrupted before the first checkpoint; nothing was written")
        raise typer.Exit(130) from None
    meta = run.meta
    last = meta["history"][-1] if meta["history"] else {}
    done = (
        f"resumed at epoch {state['epoch']}, trained to epoch {epochs}" if state is not None else f"for {epochs} epochs"
    )
    typer.echo(
        f"trained {method} on {data} {done} ({', '.join(f'{k} {v:.3f}' for k, v in last.items() if k != 'epoch')}) -> {out}"
    )
    if run.discriminator is None:
        typer.echo(
            f"note: {method} has no discriminator on x; `refine sample --method none` works as is, other samplers need "
            f"`refine fit-ratio --ckpt {out}` first and then `--ratio`"
        )


def _train_images(ctx: typer.Context, args: dict) -> None:
    """The image branch of ``refine train``: a DCGAN pair (see :mod:`refine.train.images`)."""

    def explicit(name: str) -> bool:
        return getattr(ctx.get_parameter_source(name), "name", None) == "COMMANDLINE"

    out, every, resume, epochs = args["out"], args["every"], args["resume"], args["epochs"]
    if every < 0:
        raise ConfigError(f"--every must be >= 0 (0: write the checkpoint only at the end), got {every}")
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder; give the checkpoint's file name, e.g. {out / 'gan.pt'}")
    given = {
        "method": args["method"],
        "data": args["data"],
        "n_train": args["n_train"] if explicit("n_train") else None,
        "batch_size": args["batch_size"] if explicit("batch_size") else IMAGE_PROTOCOL["batch_size"],
        "latent_dim": args["latent_dim"] if explicit("latent_dim") else IMAGE_PROTOCOL["latent_dim"],
        "g_width": args["width"],
        "d_width": args["d_width"],
        "d_norm": args["d_norm"],
        "image_size": args["image_size"],
        "channels": args["channels"],
        "seed": args["seed"],
        "options": args["options"],
    }
    state = None
    if resume is not None:
        ckpt, state = read_training_state(resume)
        given = resume_settings(
            ckpt.get("meta") or {},
            {k: v for k, v in given.items() if k == "options" or explicit({"g_width": "width"}.get(k, k))},
            where=str(resume),
        )
        if state["epoch"] >= epochs:
            raise ConfigError(
                f"{resume} has already completed {state['epoch']} epochs; ask for more with --epochs (now {epochs})"
            )
    for name in ("n_train", "batch_size", "latent_dim", "g_width", "d_width"):
        if given[name] is not None and given[name] <= 0:
            raise ConfigError(
                f"--{name.replace('_', '-').replace('g-width', 'width')} must be positive, got {given[name]}"
            )
    if epochs <= 0:
        raise ConfigError(f"--epochs must be positive, got {epochs}")
    get_method(given["method"])
    dev = resolve_device(args["device"])
    prepare_out_dir(out.parent if str(out.parent) else Path("."))
    seed = given["seed"]
    rng = make_rng(seed)
    data = load_images(
        given["data"],
        split="train",
        image_size=given["image_size"],
        channels=given["channels"],
        limit=given["n_train"],
        rng=rng,
        progress=args["progress"],
    )
    grid_dir = out.with_name(out.stem + "_samples")
    saved = {"epoch": state["epoch"] if state is not None else 0}

    conditional = getattr(get_method(given["method"]), "conditional", False)
    save_checkpoint = save_cgan_checkpoint if conditional else save_image_checkpoint

    def checkpoint(epoch: int, run, trainer) -> None:
        if epoch == epochs or (every and epoch % every == 0):
            save_checkpoint(
                out,
                run,
                meta={"seed": seed, "epochs_done": epoch, "versions": versions(), "time": timestamp()},
                train_state=training_state(trainer, epoch=epoch, rng=rng, history=run.meta["history"]),
            )
            saved["epoch"] = epoch

    try:
        if conditional:
            run = train_cgan(
                data,
                epochs=epochs,
                method_options=given["options"],
                batch_size=given["batch_size"],
                latent_dim=given["latent_dim"],
                g_width=given["g_width"],
                d_width=given["d_width"],
                rng=rng,
                device=dev,
                progress=args["progress"],
                init_seed=seed,
                resume=state,
                on_epoch=checkpoint,
                grid_dir=grid_dir,
            )
        else:
            run = train_image_gan(
                data,
                epochs=epochs,
                method=given["method"],
                method_options=given["options"],
                batch_size=given["batch_size"],
                latent_dim=given["latent_dim"],
                g_width=given["g_width"],
                d_width=given["d_width"],
                d_norm=given["d_norm"],
                rng=rng,
                device=dev,
                progress=args["progress"],
                init_seed=seed,
                resume=state,
                on_epoch=checkpoint,
                grid_dir=grid_dir,
            )
    except KeyboardInterrupt:
        if saved["epoch"] and out.is_file():
            echo_err(
                f"interrupted; {out} holds the run after epoch {saved['epoch']} (intact); continue with: "
                f"refine train --resume {out} --out {out} --epochs {epochs}"
            )
        else:
            echo_err("interrupted before the first checkpoint; nothing was written")
        raise typer.Exit(130) from None
    last = run.meta["history"][-1] if run.meta["history"] else {}
    done = (
        f"resumed at epoch {state['epoch']}, trained to epoch {epochs}" if state is not None else f"for {epochs} epochs"
    )
    typer.echo(
        f"trained {given['method']} on {data.describe()} {done} ({', '.join(f'{k} {v:.3f}' for k, v in last.items() if k != 'epoch')}) "
        f"-> {out}, sample grids in {grid_dir}/"
    )
