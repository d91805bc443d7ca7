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

from ..data.images import IMAGE_DATASETS, SPLITS, is_image_spec, real_images_like
from ..data.toy2d import MIXTURES, get_mixture
from ..errors import ConfigError, DataError, MissingWeightsError
from ..eval import (
    NEEDS_REAL,
    SAMPLE_RANGES,
    check_metrics,
    compare_methods,
    default_metrics,
    evaluate_methods,
    load_feature_space,
    load_image_samples,
    markdown_report,
    markdown_table,
    real_reference,
    reference_from_stats,
    row_features,
    save_image_panels,
    score_images,
    split_method_options,
)
from ..fs import read_npz
from ..io import atomic_write
from ..metrics import IS_MEAN, PRECISION, RECALL
from ..metrics.fid import StatisticsCache, load_statistics
from ..metrics.keys import parse_metrics
from ..metrics.timm_net import is_timm_spec
from ..metrics.toy2d import mode_metrics
from ..outputs import RunFolder
from ..plot import save_scatter_panels
from ..samplers import get_sampler, parse_options
from ..target import LatentTarget
from .app import app
from .common import cli_errors, command_line, make_rng, prepare_out_dir, resolve_device, timestamp, versions
from .eval_conditional import eval_conditional, eval_conditional_samples
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
    img = _ImageOptions(
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
            return _eval_image_samples(samples, data, n, seed, device, out, json_out, progress, img)
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
            return _eval_image_generator(inputs, per, data, n, seed, dev, out, json_out, progress, img)
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
        )
    table = markdown_table(rows, COLUMNS_2D if not samples else ["method", "hq_fraction", "modes", "kl_uniform"])
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
            panels[r["method"]] = r["_x"].cpu().numpy()
            subs[r["method"]] = f"HQ {r['hq_fraction']:.1%}, {r['modes']} modes"
        with RunFolder(out, record="eval.json") as run:  # the set is staged and put in place together, eval.json last
            save_scatter_panels(run.path("eval.png"), panels, means=get_mixture(data).means, subtitles=subs)
            with atomic_write(run.path("eval.md"), "w") as f:
                f.write(table)
            run.commit(record)


def _makes_images(inputs, seed: int) -> bool:
    return inputs.gan.generator.sample(1, rng=make_rng(seed))[1].dim() == 4


# --------------------------------------------------------------------------- images
class _ImageOptions:
    """The image-only options, checked once."""

    DEFAULTS = {
        "features": "inception",
        "inception_weights": None,
        "batch_size": 50,
        "split": "test",
        "n_real": None,
        "k": 3,
        "is_splits": 10,
        "samples_range": "auto",
        "cache": True,
        "cache_dir": None,
        "features_weights": None,
        "metrics": None,
        "ref_stats": None,
        "kid_subsets": 100,
        "kid_subset_size": 1000,
    }

    def __init__(
        self,
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
        *,
        features_weights=None,
        metrics=None,
        ref_stats=None,
        kid_subsets=100,
        kid_subset_size=1000,
    ) -> None:
        self.features, self.inception_weights, self.batch_size, self.split = (
            features,
            inception_weights,
            batch_size,
            split,
        )
        self.n_real, self.k, self.is_splits, self.samples_range, self.cache, self.cache_dir = (
            n_real,
            k,
            is_splits,
            samples_range,
            cache,
            cache_dir,
        )
        self.features_weights, self.metrics, self.ref_stats = features_weights, metrics, ref_stats
        self.kid_subsets, self.kid_subset_size = kid_subsets, kid_subset_size

    def check_unused(self, data: str) -> None:
        given = [name for name, default in self.DEFAULTS.items() if getattr(self, name) != default]
        if given:
            flags = ", ".join("--" + g.replace("_", "-") for g in given)
            raise ConfigError(f"{flags} apply to image datasets; --data {data} is a 2-D dataset")

    threshold_given = False

    def validate(self) -> None:
        if self.threshold_given:
            raise ConfigError(
                "--threshold applies to 2-D datasets; image datasets are scored by FID, IS and precision/recall"
            )
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.split not in SPLITS:
            raise ConfigError(f"--split {self.split!r}: valid splits are {', '.join(SPLITS)}")
        if self.n_real is not None and self.n_real < 2:
            raise ConfigError(f"--n-real must be at least 2 (FID needs a covariance), got {self.n_real}")
        if self.k < 1:
            raise ConfigError(f"--k must be a positive number of nearest neighbours, got {self.k}")
        if self.is_splits < 1:
            raise ConfigError(f"--is-splits must be >= 1, got {self.is_splits}")
        if self.samples_range not in SAMPLE_RANGES:
            raise ConfigError(f"--samples-range {self.samples_range!r}: valid: {', '.join(SAMPLE_RANGES)}")
        if self.kid_subsets < 1 or self.kid_subset_size < 2:
            raise ConfigError(
                f"need --kid-subsets >= 1 and --kid-subset-size >= 2; got {self.kid_subsets} and {self.kid_subset_size}"
            )

        if is_timm_spec(self.features) and self.features_weights is None:
            raise ConfigError(
                f"--features {self.features} needs --features-weights PATH (a safetensors or state_dict file of that model); "
                "refine never downloads weights"
            )
        if self.features_weights is not None and not is_timm_spec(self.features):
            raise ConfigError(
                f"--features-weights is for --features timm:NAME; --features {self.features} brings its own weights"
            )
        chosen = self.chosen_metrics()
        if self.ref_stats is not None:
            load_statistics(self.ref_stats)  # a missing or malformed file is an error before any network runs
            if "fid" not in chosen:
                raise ConfigError("--ref-stats is the reference of the Fréchet distance; add fid to --metrics")

    def chosen_metrics(self) -> tuple[str, ...] | None:
        """The --metrics named (None: the defaults the feature space allows)."""

        return None if self.metrics is None else parse_metrics(self.metrics)

    def metrics_for(self, space, data: str | None) -> tuple[str, ...]:
        """The metrics to compute in ``space``, checked against it and against whether there are real images."""

        chosen = self.chosen_metrics()
        if chosen is None:
            chosen = default_metrics(space, real=data is not None)
        check_metrics(chosen, space)
        needs_real = [m for m in chosen if m in NEEDS_REAL]
        if data is None and needs_real:
            raise ConfigError(
                f"{', '.join(needs_real)} compare with real images: pass --data NAME:ROOT (with --ref-stats, the Fréchet distance "
                "still uses the file), or choose --metrics fid,is"
            )
        return chosen

    def space(self, dev):
        try:
            return load_feature_space(
                self.features,
                inception_weights=self.inception_weights,
                features_weights=self.features_weights,
                device=dev,
            )
        except MissingWeightsError as e:
            raise MissingWeightsError(
                f"{e}; on the command line: --inception-weights PATH, or score in a feature space trained on the "
                "dataset with --features FILE"
            ) from None

    def statistics_cache(self):

        return StatisticsCache(self.cache_dir) if self.cache else None

    def record(self) -> dict:
        return {
            "k": self.k,
            "is_splits": self.is_splits,
            "kid_subsets": self.kid_subsets,
            "kid_subset_size": self.kid_subset_size,
            "batch_size": self.batch_size,
            "split": self.split,
            "n_real": self.n_real,
            "cache": self.cache,
            "pixels": "samples rounded to 8 bits, as a PNG stores them",
        }

    def reference(self, space, data: str | None, image_shape, n_prdc: int, metrics: tuple[str, ...], progress: bool):
        """The real reference: --data's images (statistics and features), the --ref-stats file's statistics, or both."""
        base = None
        if data is not None:
            base = real_reference(
                space,
                data,
                image_shape=image_shape,
                split=self.split,
                n_real=self.n_real,
                n_prdc=n_prdc,
                cache=self.statistics_cache(),
                batch_size=self.batch_size,
                progress=progress,
            )
        if self.ref_stats is None:
            return base
        return reference_from_stats(self.ref_stats, space, image_shape=image_shape, base=base)


def _image_outputs(
    rows: list[dict],
    space,
    reference,
    out: Optional[Path],
    json_out: bool,
    img: _ImageOptions,
    record: dict,
    *,
    cost: bool,
    metrics: tuple[str, ...],
) -> None:

    keys = space.keys
    report = markdown_report(rows, space, reference, cost=cost, k=img.k, is_splits=img.is_splits, metrics=metrics)
    clean = [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]
    if json_out:
        import json

        typer.echo(json.dumps(clean, indent=2))
    else:
        typer.echo(report)
    if out is None:
        return
    panels = {}
    subs = {}
    if reference.grid is not None:
        real_title = f"real ({reference.dataset.split(':', 1)[0]} {reference.split})"
        panels[real_title] = reference.grid
    for r in rows:
        if "error" in r:  # no samples to show
            continue
        title = r["method"] if len(r["method"]) <= 40 else "..." + r["method"][-37:]
        panels[title] = r["_x"]
        parts = []
        if keys.fd in r:
            parts.append(f"{keys.fd.upper()} {r[keys.fd]:.4g}")
        if keys.kd_mean in r:
            parts.append(f"{keys.kd_mean.split('_')[0].upper()} {r[keys.kd_mean]:.3g}")
        if IS_MEAN in r:
            parts.append(f"IS {r[IS_MEAN]:.3g}")
        if PRECISION in r:
            parts.append(f"P {r[PRECISION]:.2f}, R {r[RECALL]:.2f}")
        subs[title] = ", ".join(parts)
    with RunFolder(out, record="eval.json") as run:  # the set is staged and put in place together, eval.json last
        save_image_panels(run.path("eval.png"), panels, subtitles=subs)
        with atomic_write(run.path("eval.md"), "w") as f:
            f.write(report)
        run.commit(
            {
                **record,
                "metrics": list(metrics),
                "keys": keys._asdict(),
                "features": space.describe(),
                "reference": reference.describe(),
                **img.record(),
                "rows": clean,
                "versions": versions(),
                "time": timestamp(),
            }
        )


def _eval_image_generator(
    inputs, per, data: str | None, n: int, seed: int, dev, out, json_out: bool, progress: bool, img: _ImageOptions
) -> None:

    img.validate()
    if img.samples_range != "auto":
        raise ConfigError("--samples-range is for --samples files; a generator declares its own output range")
    gen = inputs.gan.generator
    x1 = gen.sample(1, rng=make_rng(seed))[1]
    if x1.dim() != 4:
        raise ConfigError(
            f"--data {data} is an image dataset but the generator makes samples of shape {tuple(x1.shape[1:])}; "
            "pass the 2-D dataset it was trained on"
        )
    if gen.output_range not in ("[-1,1]", "[0,1]"):
        raise ConfigError(
            f"the generator's output range is {gen.output_range!r}; images need a declared range: pass --output-range [-1,1] or [0,1]"
        )
    space = img.space(dev)
    metrics = img.metrics_for(space, data)
    ratio_sha = (inputs.provenance.get("ratio") or {}).get("sha256")
    if ratio_sha is not None and space.source.get("sha256") == ratio_sha:
        space.network += "; the ratio's own feature network, which favours refinement with that ratio"
    samplers = [get_sampler(m, **o) for m, o in per]
    needs_real = any(s.real_rows(n) > 0 for s in samplers)
    if needs_real and data is None:
        raise ConfigError("a method starts from (or fine-tunes on) real images; pass --data NAME:ROOT for them")
    reference = img.reference(space, data, tuple(x1.shape[1:]), n, metrics, progress)
    real = None
    if needs_real:
        # images the methods start from (or fine-tune on) come from the other split than the reference, so none is scored against itself
        other = "train" if img.split == "test" else "test"
        n_start = max(s.real_rows(n) for s in samplers)
        real = real_images_like(
            data, tuple(x1.shape[1:]), n_start, split=other, rng=make_rng(seed + 1_000_003), device=dev
        )
    target = LatentTarget(gen, inputs.ratio)
    rows = evaluate_methods(
        target,
        per,
        n,
        seed=seed,
        space=space,
        reference=reference,
        output_range=gen.output_range,
        k=img.k,
        is_splits=img.is_splits,
        batch_size=img.batch_size,
        progress=progress,
        real=real,
        metrics=metrics,
        kid_subsets=img.kid_subsets,
        kid_subset_size=img.kid_subset_size,
    )
    record = {
        "command": command_line(),
        "data": data,
        "n": n,
        "seed": seed,
        "device": str(dev),
        "inputs": inputs.provenance,
    }
    _image_outputs(rows, space, reference, out, json_out, img, record, cost=True, metrics=metrics)


def _eval_image_samples(
    samples: list[Path],
    data: str | None,
    n: int,
    seed: int,
    device: str,
    out,
    json_out: bool,
    progress: bool,
    img: _ImageOptions,
) -> None:
    img.validate()
    dev = resolve_device(device)
    sets = []
    for p in samples:
        x, info = load_image_samples(p, value_range=img.samples_range, progress=progress)
        if sets and tuple(x.shape[1:]) != tuple(sets[0][1].shape[1:]):
            raise DataError(
                f"samples {p} are images {tuple(x.shape[1:])} but {sets[0][0]} holds {tuple(sets[0][1].shape[1:])}; "
                "compare sets of one image shape"
            )
        sets.append((p, x, info))
    space = img.space(dev)
    metrics = img.metrics_for(space, data)
    shape = tuple(sets[0][1].shape[1:])
    reference = img.reference(space, data, shape, max(len(x) for _, x, _ in sets), metrics, progress)
    rows = []
    for p, x, info in sets:
        s = score_images(
            space,
            x,
            reference,
            k=img.k,
            is_splits=img.is_splits,
            is_rng=torch.Generator().manual_seed(seed),
            batch_size=img.batch_size,
            progress=progress,
            metrics=metrics,
            kid_subsets=img.kid_subsets,
            kid_subset_size=img.kid_subset_size,
            kid_rng=torch.Generator().manual_seed(seed),
        )
        rows.append({"method": str(p), **s, **row_features(space), "value_range": info["value_range"], "_x": x[:64]})
    record = {
        "command": command_line(),
        "data": data,
        "seed": seed,
        "device": str(dev),
        "samples": [info for _, _, info in sets],
    }
    _image_outputs(rows, space, reference, out, json_out, img, record, cost=False, metrics=metrics)
