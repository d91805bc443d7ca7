"""``refine tune``: choose the method and its settings for a generator, a budget and held-out data."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
import typer

from ..data.images import is_image_spec
from ..data.toy2d import MIXTURES
from ..errors import ConfigError
from ..eval import load_feature_space
from ..io import safe_load, save_discriminator_ratio, write_json
from ..io.pretrained import DEFAULT_RATIO, pretrained_path
from ..target import LatentTarget
from ..tune.config import make_config, write_config
from ..tune.front import markdown, save_front_plot
from ..tune.score import ImageScorer, ModeScorer
from ..tune.search import DEFAULT_METHODS, is_critic, ratio_at
from ..tune.search import tune as run_tune
from ..tune.space import TEMPERATURE, sampler_options
from .app import app
from .common import cli_errors, prepare_out_dir, resolve_device, timestamp, versions
from .inputs import Foreign, foreign_options, load_inputs


@app.command()
@cli_errors
@foreign_options
def tune(
    ckpt: Optional[Path] = typer.Option(None, "--ckpt", help="GAN checkpoint (default: the shipped 25-Gaussian GAN)"),
    ratio: Optional[Path] = typer.Option(
        None,
        "--ratio",
        help="density-ratio file (default: the shipped fitted ratio, or the checkpoint's discriminator)",
    ),
    data: Optional[str] = typer.Option(
        None, "--data", help="real data: a 2-D dataset name or an image dataset NAME:ROOT (default: the checkpoint's)"
    ),
    budget: float = typer.Option(
        20.0, "--budget", help="passes through G or D per output sample a setting may spend (backward = 2 forwards)"
    ),
    methods: str = typer.Option(",".join(DEFAULT_METHODS), "--methods", help="comma-separated methods to search"),
    n: int = typer.Option(
        4000, "-n", "--n", help="samples each setting of the final rung (and the test re-score) draws"
    ),
    trials: int = typer.Option(27, "--trials", help="random settings per method at the first rung"),
    eta: int = typer.Option(
        3, "--eta", help="successive halving: keep the best 1/eta of a rung, on eta times the samples"
    ),
    keep: int = typer.Option(3, "--keep", help="settings per method scored at the final n"),
    hq_threshold: float = typer.Option(
        4.0,
        "--hq-threshold",
        help="2-D: high quality = nearest mode within this many std (4: DRS protocol, 3: VEEGAN's)",
    ),
    features: Optional[str] = typer.Option(
        None,
        "--features",
        help="images: feature space of FID/recall/coverage, 'inception' or a classifier file (not the ratio's own)",
    ),
    n_val: int = typer.Option(10000, "--n-val", help="images: training images held out as the validation split"),
    seed: int = typer.Option(0, "--seed", help="random seed of the search"),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N"),
    out: Path = typer.Option(
        Path("runs/tune"), "--out", help="output folder: config.json, tune.md, tune.json, front.png, trials.json"
    ),
    resume: bool = typer.Option(False, "--resume", help="continue the tune whose trials --out/trials.json holds"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="show a progress bar"),
    foreign: Foreign = None,
) -> None:
    """Search every method's knobs within --budget, score on a validation split, re-score the best on the test split.

    Writes the quality-versus-cost front (front.png, tune.md), every trial (trials.json) and
    the chosen setting as config.json, which `refine sample --config` replays (configs/ holds
    each method's best). Ctrl-C keeps the finished trials; --resume continues.
    """
    names = [m.strip() for m in methods.split(",") if m.strip()]
    if not budget >= 1:
        raise ConfigError(f"--budget must be >= 1 pass per output sample (the raw generator's cost), got {budget}")
    dev = resolve_device(device)
    out = prepare_out_dir(out)
    inputs = load_inputs(ckpt, ratio, dev, need_ratio=True, foreign=foreign)
    data = data or inputs.dataset
    G = inputs.gan.generator
    if data in MIXTURES:
        scorer = ModeScorer(data, threshold=hq_threshold)
    elif data is not None and is_image_spec(data):
        if features is None:
            raise ConfigError(
                "--data is an image dataset: pass --features (inception, or a classifier file) for FID, recall and coverage"
            )
        shape = tuple(G.sample(1, rng=torch.Generator().manual_seed(0))[1].shape[1:])
        scorer = ImageScorer(
            load_feature_space(features, device=dev),
            data,
            image_shape=shape,
            output_range=G.output_range,
            n_val=n_val,
            progress=progress,
        )
    else:
        raise ConfigError(
            f"--data {data!r} is neither a 2-D dataset ({', '.join(MIXTURES)}) nor an image dataset NAME:ROOT; pass --data"
        )
    target = LatentTarget(G, inputs.ratio)
    try:
        result = run_tune(
            target,
            scorer,
            budget=budget,
            methods=names,
            n=n,
            trials=trials,
            eta=eta,
            keep=keep,
            seed=seed,
            journal=out / "trials.json",
            resume=resume,
            progress=progress,
            inputs=inputs.provenance,
        )
    except KeyboardInterrupt:
        typer.echo(
            f"interrupted: the finished trials are kept in {out / 'trials.json'}; rerun the same command with --resume to continue",
            err=True,
        )
        raise typer.Exit(130) from None
    if result.chosen is None:
        raise ConfigError(f"no setting of {', '.join(names)} finished within --budget {budget:g}; raise the budget")
    ratio_file = (
        ratio
        if ratio is not None
        else (pretrained_path(DEFAULT_RATIO) if ckpt is None and foreign.disc is None else None)
    )
    flags = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(foreign).items() if v != getattr(Foreign(), k)}
    for m, b in result.best.items():
        b["config"] = _write_config(out, m, b, target, inputs, ckpt, ratio_file, flags, seed=b["seed"])
    write_config(dict(result.best[result.chosen]["config"]), out / "config.json")
    title = f"refine tune: {data}, budget {budget:g} passes per sample, n {n}"
    save_front_plot(out / "front.png", result, title=title)
    header = (
        f"{title}; {len([t for t in result.trials if isinstance(t['rung'], int)])} trials in {result.wall_time_s:.1f}s on {dev}"
        f"{f' ({result.resumed} from an earlier run)' if result.resumed else ''}. Objective: {scorer.describe()['objective']}; "
        "validation = the search's split, test = a fresh live run of the best setting (what `refine sample --config` replays).\n\n"
    )
    table = markdown(result, tuple(scorer.columns))
    (out / "tune.md").write_text(header + table)
    write_json({**result.to_dict(), "data": data, "versions": versions(), "time": timestamp()}, out / "tune.json")
    best = result.best[result.chosen]
    typer.echo(header + table)
    typer.echo(
        f"chosen: {result.chosen} ({best['validation']['objective']:.4f} validation, "
        f"{best['test'].get('objective', float('nan')):.4f} test) -> {out / 'config.json'}; "
        f"replay with `refine sample --config {out / 'config.json'}`"
    )


def _write_config(
    out: Path, method: str, best: dict, target, inputs, ckpt, ratio_file, flags: dict, *, seed: int
) -> dict:
    """configs/METHOD.json for a method's best setting; a tuned critic temperature goes into ratios/METHOD.pt (or --disc-temperature)."""
    setting = best["setting"]
    t = setting.get(TEMPERATURE)
    if t is not None and is_critic(target.ratio):
        if flags.get("disc") is not None:
            flags = {**flags, "disc_temperature": float(t)}
        else:
            arch = _ratio_arch(inputs, ratio_file)
            ratio_file = out / "ratios" / f"{method}.pt"
            save_discriminator_ratio(
                ratio_file,
                ratio_at(target.ratio, t),
                arch,
                meta={"tuned_temperature": float(t), "source": inputs.provenance.get("ratio"), "time": timestamp()},
            )
    v, te = best["validation"], best["test"]
    scores = {
        "validation": {"objective": v["objective"], **v["metrics"], "cost": v["cost"], "n": v["n"]},
        "test": {
            "objective": te.get("objective"),
            **te.get("metrics", {}),
            "cost": te.get("cost"),
            "n": te["n"],
            "status": te["status"],
        },
        "setting": setting,
    }
    cfg = make_config(
        method=method,
        options=sampler_options(setting),
        seed=seed,
        checkpoint=ckpt,
        ratio=ratio_file,
        foreign=flags,
        scores=scores,
    )
    write_config(cfg, out / "configs" / f"{method}.json")
    return cfg


def _ratio_arch(inputs, ratio_file) -> dict:
    """The architecture entry of the critic being tuned (from its ratio file, or the checkpoint)."""
    if ratio_file is not None:
        return safe_load(ratio_file, what="ratio file")["arch"]
    return inputs.gan.config["discriminator"]["arch"]
