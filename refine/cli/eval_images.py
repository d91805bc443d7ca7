"""``refine eval`` on image datasets: the image-only options, scoring a generator's methods or
sample files in a feature space, and the outputs (the table, a picture of each set, eval.json).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Optional

import torch
import typer

from ..data.images import SPLITS, real_images_like
from ..errors import ConfigError, DataError, MissingWeightsError
from ..eval import (
    NEEDS_REAL,
    SAMPLE_RANGES,
    check_metrics,
    default_metrics,
    evaluate_methods,
    load_feature_space,
    load_image_samples,
    markdown_report,
    real_reference,
    reference_from_stats,
    row_features,
    save_image_panels,
    score_images,
)
from ..io import atomic_write
from ..metrics import IS_MEAN, PRECISION, RECALL
from ..metrics.fid import StatisticsCache, load_statistics
from ..metrics.keys import parse_metrics
from ..metrics.timm_net import is_timm_spec
from ..outputs import RunFolder
from ..samplers import get_sampler
from ..target import LatentTarget
from .common import command_line, make_rng, resolve_device, timestamp, versions

__all__ = ["ImageOptions", "eval_image_generator", "eval_image_samples"]


@dataclass
class ImageOptions:
    """The image-only options, checked once."""

    DEFAULTS: ClassVar[dict] = {
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

    features: str
    inception_weights: Optional[Path]
    batch_size: int
    split: str
    n_real: Optional[int]
    k: int
    is_splits: int
    samples_range: str
    cache: bool
    cache_dir: Optional[Path]
    features_weights: Optional[Path] = None
    metrics: Optional[str] = None
    ref_stats: Optional[Path] = None
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    #: set when --threshold (a 2-D option) was given, so that an image run refuses it
    threshold_given: bool = False

    def check_unused(self, data: str) -> None:
        given = [name for name, default in self.DEFAULTS.items() if getattr(self, name) != default]
        if given:
            flags = ", ".join("--" + g.replace("_", "-") for g in given)
            raise ConfigError(f"{flags} apply to image datasets; --data {data} is a 2-D dataset")

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
        """The options every image evaluation record holds."""
        recorded = ("k", "is_splits", "kid_subsets", "kid_subset_size", "batch_size", "split", "n_real", "cache")
        return {
            **{name: getattr(self, name) for name in recorded},
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
    img: ImageOptions,
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


def eval_image_generator(
    inputs, per, data: str | None, n: int, seed: int, dev, out, json_out: bool, progress: bool, img: ImageOptions
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


def eval_image_samples(
    samples: list[Path],
    data: str | None,
    n: int,
    seed: int,
    device: str,
    out,
    json_out: bool,
    progress: bool,
    img: ImageOptions,
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
