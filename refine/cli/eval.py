"""``refine eval``: score raw and refined samples side by side.

2-D datasets: high-quality fraction, modes hit, mode-histogram KL. Image datasets (``--data
NAME:ROOT``, or a checkpoint trained on one): the ``--metrics`` chosen from FID, KID, IS,
precision/recall/density/coverage, in a named feature space (:mod:`refine.eval`),
against the dataset's images or a reference statistics file (``--ref-stats``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch
import typer

from ..data.images import IMAGE_DATASETS, is_image_spec
from ..data.toy2d import MIXTURES, get_mixture
from ..errors import ConfigError, DataError
from ..eval import (
    compare_methods,
    markdown_table,
    split_method_options,
    table_columns,
)
from ..fs import read_npz
from ..io import atomic_write
from ..metrics.toy2d import mode_metrics
from ..outputs import RunFolder
from ..plot import save_scatter_panels
from ..samplers import get_sampler, parse_options
from ..target import LatentTarget
from .app import app
from .common import cli_errors, command_line, make_rng, prepare_out_dir, resolve_device, timestamp, versions
from .eval_conditional import eval_conditional, eval_conditional_samples
from .eval_images import ImageOptions, eval_image_generator, eval_image_samples
from .inputs import Foreign, foreign_options, load_inputs
from .sample_conditional import is_conditional_checkpoint

COLUMNS_2D = ["method", "hq_fraction", "modes", "kl_uniform", "acceptance_rate", "g_evals_per_sample", "wall_time_s"]


def _load_samples(path: Path) -> torch.Tensor:
    """``x`` of a samples file: a regular file, an .npz whose headers match its bytes, finite numbers only."""
    x = read_npz(path, "samples file", keys=("x",))["x"]
    if x.dtype.kind not in "fiu":
        raise DataError(
            f"samples file {path}: array 'x' has dtype {x.dtype}, expected real numbers (float or integer samples)"
        )
    if x.ndim < 2 or len(x) == 0:
        raise DataError(f"samples file {path}: array 'x' has shape {x.shape}, expected (N, ...) with N >= 1 samples")
    return torch.from_numpy(np.asarray(x, dtype=np.float32))


@app.command("eval")
@cli_errors
@foreign_options
def eval_(
    samples: list[Path] = typer.Option(
        [],
        "--samples",
        help="samples .npz file(s) from `refine sample`, or folders of PNG/JPEG images (instead of --ckpt)",
    ),
    ckpt: Optional[Path] = typer.Option(None, "--ckpt", help="GAN checkpoint (default: the shipped 25-Gaussian GAN)"),
    ratio: Optional[Path] = typer.Option(None, "--ratio", help="density-ratio file"),
    methods: str = typer.Option(
        "none,rs,drs,mh,sir", "--methods", help="comma-separated samplers; 'none' is the raw generator"
    ),
    option: list[str] = typer.Option([], "--option", "-o", help="method.key=value, e.g. -o drs.gamma=90 -o mh.k=200"),
    data: Optional[str] = typer.Option(
        None,
        "--data",
        help="dataset the samples are scored against: a 2-D name or an image dataset NAME:ROOT (default: the checkpoint's)",
    ),
    n: int = typer.Option(10000, "-n", "--n"),
    classes: Optional[str] = typer.Option(
        None,
        "--classes",
        help="class-conditional checkpoints: 'balanced' (the default: n/K per class) or class indices such as 3,7; with --samples files holding labels y: 'all' or class indices; scored by intra-class distances",
    ),
    threshold: float = typer.Option(
        4.0, "--threshold", help="2-D: high quality means within this many std of the nearest mean"
    ),
    features: str = typer.Option(
        "inception",
        "--features",
        help="images: feature space, 'inception' (pytorch-fid weights), a classifier file (refine train-classifier, or a feature-sp ratio file), or timm:NAME with --features-weights",
    ),
    features_weights: Optional[Path] = typer.Option(
        None,
        "--features-weights",
        help="images: weights of --features timm:NAME (safetensors or state_dict file; never downloaded)",
    ),
    metrics: Optional[str] = typer.Option(
        None,
        "--metrics",
        help="images: comma-separated, from fid,kid,is,prdc (default fid,is,prdc; prdc is quadratic in n, kid costs subsets x subset-size^2)",
    ),
    ref_stats: Optional[Path] = typer.Option(
        None,
        "--ref-stats",
        help="images: reference statistics .npz (mu, sigma: pytorch-fid's format, or refine's feature_stats.npz) for the Fréchet distance instead of --data's",
    ),
    kid_subsets: int = typer.Option(100, "--kid-subsets", help="images: KID subsets (mean and std over them)"),
    kid_subset_size: int = typer.Option(
        1000, "--kid-subset-size", help="images: KID subset size (capped at the number of samples and real images)"
    ),
    inception_weights: Optional[Path] = typer.Option(
        None,
        "--inception-weights",
        help="images: pt_inception-2015-12-05-6726825d.pth (default: $REFINE_INCEPTION_WEIGHTS, then the torch hub cache; never downloaded)",
    ),
    batch_size: int = typer.Option(50, "--batch-size", help="images: batch size of feature extraction"),
    split: str = typer.Option(
        "test", "--split", help="images: split of --data the samples are compared with (train or test)"
    ),
    n_real: Optional[int] = typer.Option(
        None, "--n-real", help="images: use a random subset of this many real images (default: the whole split)"
    ),
    k: int = typer.Option(3, "--k", help="images: nearest neighbours of precision/recall/density/coverage"),
    is_splits: int = typer.Option(10, "--is-splits", help="images: splits of the Inception Score"),
    samples_range: str = typer.Option(
        "auto", "--samples-range", help="images: value range of float samples files: auto, [-1,1], [0,1] or [0,255]"
    ),
    cache: bool = typer.Option(True, "--cache/--no-cache", help="images: reuse and store real-image statistics"),
    cache_dir: Optional[Path] = typer.Option(
        None,
        "--cache-dir",
        help="images: statistics cache folder (default: $REFINE_CACHE, else $XDG_CACHE_HOME/refine, else ~/.cache/refine)",
    ),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("auto", "--device"),
    out: Optional[Path] = typer.Option(None, "--out", help="folder for eval.md, eval.json and eval.png"),
    json_out: bool = typer.Option(False, "--json", help="print the rows as JSON instead of a table"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    foreign: Foreign = None,
) -> None:
    """Compare the raw generator with refined samples, with the cost of each method.

    2-D: high-quality fraction, modes hit, mode-histogram KL. Images: FID, IS, precision/recall,
    density/coverage, class-histogram KL, in the feature space --features names. A class-conditional
    checkpoint: intra-class FID, label accuracy and a per-class table, for --classes.
    """
    if n <= 0:
        raise ConfigError(f"-n must be positive, got {n}")
    if not threshold > 0:
        raise ConfigError(f"--threshold is a number of standard deviations and must be > 0, got {threshold}")
    img = ImageOptions(
        features,
        inception_weights,
        batch_size,
        split,
        n_real,
        k,
        is_splits,
        samples_range,
        cache,
        cache_dir,
        features_weights=features_weights,
        metrics=metrics,
        ref_stats=ref_stats,
        kid_subsets=kid_subsets,
        kid_subset_size=kid_subset_size,
    )
    img.threshold_given = threshold != 4.0
    if classes is not None and not samples and not is_conditional_checkpoint(ckpt):
        raise ConfigError(
            f"--classes applies to class-conditional checkpoints (refine train --method cgan); {ckpt or 'the default checkpoint'} is unconditional"
        )
    if out is not None:
        prepare_out_dir(out)
    rows: list[dict] = []
    inputs = None
    if samples:
        if classes is not None:
            return eval_conditional_samples(
                samples, data=data, classes=classes, seed=seed, dev=resolve_device(device), out=out,
                json_out=json_out, progress=progress, img=img,
            )  # fmt: skip
        if is_image_spec(data) or (data is None and ref_stats is not None):
            return eval_image_samples(samples, data, n, seed, device, out, json_out, progress, img)
        if data not in MIXTURES:
            raise ConfigError(
                f"--samples needs --data: a 2-D dataset ({', '.join(MIXTURES)}) or the image dataset NAME:ROOT "
                f"({', '.join(IMAGE_DATASETS)}) the samples are compared with"
            )
        img.check_unused(data)
        mixture = get_mixture(data)
        for p in samples:
            x = _load_samples(p)
            rows.append({"method": str(p), **mode_metrics(x, mixture, threshold=threshold), "_x": x})
    else:
        names = [m.strip() for m in methods.split(",") if m.strip()]
        if not names:
            raise ConfigError("--methods is empty")
        per = split_method_options(names, parse_options(option))
        dev = resolve_device(device)
        if is_conditional_checkpoint(ckpt):
            return eval_conditional(
                ckpt, ratio, per, data=data, classes=classes, n=n, seed=seed, dev=dev, out=out,
                json_out=json_out, progress=progress, img=img, foreign=foreign,
            )  # fmt: skip
        inputs = load_inputs(
            ckpt,
            ratio,
            dev,
            need_ratio=any(m != "none" for m in names),
            samplers=[get_sampler(m, **o) for m, o in per],
            foreign=foreign,
        )
        data = data or (None if ref_stats is not None else inputs.dataset)
        if is_image_spec(data) or (data is None and ref_stats is not None):
            return eval_image_generator(inputs, per, data, n, seed, dev, out, json_out, progress, img)
        if data not in MIXTURES:
            if data is None and _makes_images(inputs, seed):
                raise ConfigError(
                    f"{ckpt} makes images and names no dataset; pass --data NAME:ROOT (names: {', '.join(IMAGE_DATASETS)}) "
                    "for the real images to compare with"
                )
            raise ConfigError(
                f"--data {data!r} is not a 2-D dataset ({', '.join(MIXTURES)}) nor an image dataset NAME:ROOT "
                f"({', '.join(IMAGE_DATASETS)})"
            )
        img.check_unused(data)
        mixture = get_mixture(data)
        target = LatentTarget(inputs.gan.generator, inputs.ratio)
        real = mixture.sample(n, rng=make_rng(seed + 1_000_003)).to(dev)
        rows = compare_methods(
            target,
            per,
            n,
            seed=seed,
            score=lambda x: mode_metrics(x, mixture, threshold=threshold),
            progress=progress,
            real=real,
            keep_going=True,
        )
    columns = COLUMNS_2D if not samples else ["method", "hq_fraction", "modes", "kl_uniform"]
    table = markdown_table(rows, table_columns(columns, rows))
    clean = [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]
    if json_out:
        import json

        typer.echo(json.dumps(clean, indent=2))
    else:
        typer.echo(table)
    if out is not None:
        record = {
            "command": command_line(),
            "data": data,
            "n": n,
            "seed": seed,
            "threshold": threshold,
            "rows": clean,
            "versions": versions(),
            "time": timestamp(),
        }
        panels = {"real": get_mixture(data).sample(min(n, 5000), rng=make_rng(seed + 7)).numpy()}
        subs = {}
        for r in rows:
            if "error" in r:  # no samples to show
                continue
            panels[r["method"]] = r["_x"].cpu().numpy()
            subs[r["method"]] = f"HQ {r['hq_fraction']:.1%}, {r['modes']} modes"
        with RunFolder(out, record="eval.json") as run:  # the set is staged and put in place together, eval.json last
            save_scatter_panels(run.path("eval.png"), panels, means=get_mixture(data).means, subtitles=subs)
            with atomic_write(run.path("eval.md"), "w") as f:
                f.write(table)
            run.commit(record)


def _makes_images(inputs, seed: int) -> bool:
    return inputs.gan.generator.sample(1, rng=make_rng(seed))[1].dim() == 4
