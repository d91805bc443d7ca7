"""The real reference of a feature space: statistics for the Fréchet distance, features for precision/recall and KID.

Where the space has class logits, the reference also holds the histogram of the real images'
predicted classes (over the precision/recall subset), against which the samples' class-histogram
KL is measured.

Real-data statistics (``mu``, ``sigma``) are cached by :class:`refine.metrics.fid.StatisticsCache`,
keyed by dataset (name and absolute root), split, preprocessing (image size, channels, number of
images) and network (name and weights hash); the real features used for precision/recall and KID
are cached next to them. Reference statistics can also come from a file
(:func:`reference_from_stats`: pytorch-fid's ``mu``/``sigma`` ``.npz``, or the ``feature_stats.npz``
of ``refine sample --feature-stats``; ``refine eval --ref-stats``), recorded with its sha256.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data.images import convert_images, load_images, parse_data_spec
from ..errors import ConfigError, DataError
from ..io import atomic_write, file_sha256
from ..metrics.features import iter_features
from ..metrics.fid import StatisticsCache, StatsAccumulator, load_statistics, load_statistics_meta
from .spaces import FeatureSpace

__all__ = ["RealReference", "real_reference", "reference_from_stats"]

#: Seed of the random subset of real images used for precision/recall (fixed, so the cache is shared across --seed).
_SUBSET_SEED = 0


@dataclass
class RealReference:
    """Real-image statistics (Fréchet distance) and features (precision/recall, KID) in one feature space.

    ``stats_file`` is set when ``mu``/``sigma`` come from a statistics file (path, sha256, what
    it records) rather than from ``dataset``; ``features`` is None when there are no real images
    (a statistics file alone), which allows the Fréchet distance and IS only. ``class_counts``
    holds how many of the ``features`` images the network assigns to each class (None where the
    space has no logits or there are no real images).
    """

    dataset: str | None
    split: str | None
    n: int | None
    mu: np.ndarray
    sigma: np.ndarray
    features: torch.Tensor | None
    image_shape: tuple[int, int, int]
    network: str
    preprocessing: dict
    cache: dict
    grid: torch.Tensor | None = None
    stats_file: dict | None = None
    class_counts: np.ndarray | None = None

    def describe(self) -> dict:
        out = {
            "dataset": self.dataset,
            "split": self.split,
            "n_fid": self.n,
            "n_prdc": None if self.features is None else int(self.features.shape[0]),
            "class_counts": None if self.class_counts is None else [int(c) for c in self.class_counts],
            "trace_sigma": float(np.trace(self.sigma)),
            "image_shape": list(self.image_shape),
            "network": self.network,
            "preprocessing": self.preprocessing,
            "cache": self.cache,
        }
        if self.stats_file is not None:
            out["statistics_file"] = self.stats_file
        return out


# --------------------------------------------------------------------------- the cached real features
def _prdc_path(cache: StatisticsCache, key: str) -> Path:
    return cache.root / "prdc_features" / f"{key}.npz"


def load_cached_features(path: Path, key_fields: dict) -> tuple[torch.Tensor | None, np.ndarray | None]:
    """The cached features and class counts (None: not cached; counts None in files written without them)."""
    if not path.is_file():
        return None, None
    try:
        with np.load(path, allow_pickle=False) as f:
            meta = json.loads(str(f["meta"]))
            feats = np.asarray(f["features"], dtype=np.float32)
            counts = np.asarray(f["class_counts"], dtype=np.int64) if "class_counts" in f.files else None
    except (OSError, ValueError, KeyError) as e:
        raise DataError(
            f"cached features {path} cannot be read ({str(e).splitlines()[0][:100]}); delete the file to recompute it"
        ) from None
    if meta.get("key") != key_fields:
        raise DataError(
            f"cached features {path} record key {meta.get('key')!r}, not {key_fields!r}; delete the file to recompute it"
        )
    return torch.from_numpy(feats), counts


def save_cached_features(path: Path, feats: torch.Tensor, counts: np.ndarray | None, key_fields: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    extra = {} if counts is None else {"class_counts": np.asarray(counts, dtype=np.int64)}
    with atomic_write(path) as f:
        np.savez(
            f,
            features=feats.numpy().astype(np.float32),
            meta=np.array(json.dumps({"key": key_fields}, sort_keys=True)),
            **extra,
        )


def _class_counts(logits: torch.Tensor, num_classes: int) -> np.ndarray:
    return np.bincount(logits.argmax(1).cpu().numpy(), minlength=num_classes)[:num_classes].astype(np.int64)


def _stats_meta(path: Path) -> dict:
    try:
        return load_statistics_meta(path)
    except Exception:  # noqa: BLE001 - the count is informational only
        return {}


# --------------------------------------------------------------------------- references
def real_reference(
    space: FeatureSpace,
    data: str,
    *,
    image_shape: Sequence[int],
    split: str = "test",
    n_real: int | None = None,
    n_prdc: int = 10000,
    cache: StatisticsCache | None = None,
    batch_size: int = 50,
    progress: bool = False,
    grid: int = 64,
) -> RealReference:
    """Statistics of the real images ``data`` (a ``NAME:ROOT`` spec) in ``space``, at the generator's ``image_shape`` ``(C, H, W)``.

    FID statistics use all images of ``split`` (or a random ``n_real`` of them); precision and
    recall use a fixed random subset of ``n_prdc`` of those. Both come from ``cache`` when it
    holds them (and are stored there otherwise). ``grid`` real images are kept for pictures.
    """
    spec = parse_data_spec(data)
    c, h, w = (int(v) for v in image_shape)
    if h != w:
        raise ConfigError(f"image datasets are square; the samples are {h}x{w}")
    if n_real is not None and n_real < 2:
        raise ConfigError(f"the real reference needs at least 2 images, got n_real={n_real}")
    if n_prdc < 1:
        raise ConfigError(f"n_prdc must be positive, got {n_prdc}")
    dataset = f"{spec.name}:{spec.root.expanduser().resolve()}"
    prep = {
        "image_size": h,
        "channels": c,
        "pixels": "uint8",
        "n_real": n_real if n_real is not None else "all",
        "subset_seed": _SUBSET_SEED if n_real is not None else None,
    }
    prdc_prep = {**prep, "n_prdc": int(n_prdc), "prdc_subset_seed": _SUBSET_SEED}
    prdc_key = {
        "dataset": dataset,
        "split": split,
        "preprocessing": prdc_prep,
        "network": space.key,
    }  # as StatisticsCache keys its files
    stats = prdc_feats = prdc_file = counts = None
    record: dict = {"enabled": cache is not None}
    if cache is not None:
        stats = cache.load(dataset, split, prep, space.key)
        prdc_file = _prdc_path(cache, cache.key(dataset, split, prdc_prep, space.key))
        prdc_feats, counts = load_cached_features(prdc_file, prdc_key)
        if prdc_feats is not None and counts is None and space.logits is not None:
            prdc_feats = None  # cached before class counts were kept: recompute both
        record.update(
            statistics=str(cache.path(dataset, split, prep, space.key)),
            statistics_hit=stats is not None,
            prdc_features=str(prdc_file),
            prdc_features_hit=prdc_feats is not None,
        )
    missing = stats is None or prdc_feats is None
    images = None
    if missing or grid:  # on a full cache hit, only the images for the picture are read
        limit = n_real if missing else min(grid, n_real or grid)
        real = load_images(
            spec, split=split, limit=limit, rng=torch.Generator().manual_seed(_SUBSET_SEED), progress=progress
        )
        images = convert_images(real.images, image_size=h, channels=c)
    if missing:
        n_total = len(images)
        if n_total < 2:
            raise DataError(f"{data} [{split}] holds {n_total} image(s); the real reference needs at least 2")
        subset = (
            torch.randperm(n_total, generator=torch.Generator().manual_seed(_SUBSET_SEED))[: min(int(n_prdc), n_total)]
            .sort()
            .values
        )
        desc = f"real features ({space.short})"
        if stats is None:  # one pass over every image: stream the statistics, keep the subset's features
            acc = StatsAccumulator()
            keep = torch.zeros(n_total, dtype=torch.bool)
            keep[subset] = True
            kept, kept_logits, start = [], [], 0
            for out in iter_features(
                space.module,
                images,
                batch_size=batch_size,
                transform=space.transform,
                progress=progress,
                desc=desc,
                with_logits=space.logits is not None,
            ):
                f = out[0] if isinstance(out, tuple) else out
                acc.update(f)
                kept.append(f[keep[start : start + len(f)]])
                if isinstance(out, tuple):
                    kept_logits.append(out[1][keep[start : start + len(f)]])
                start += len(f)
            mu, sigma = acc.compute()
            if prdc_feats is None:
                prdc_feats = torch.cat(kept)
                if kept_logits:
                    logits = torch.cat(kept_logits)
                    counts = _class_counts(logits, logits.shape[1])
            if cache is not None:
                cache.save(dataset, split, prep, space.key, mu, sigma, meta={"n": n_total, "network": space.network})
        else:
            mu, sigma = stats
            prdc_feats, logits = space.extract(images[subset], batch_size=batch_size, progress=progress, desc=desc)
            if logits is not None:
                counts = _class_counts(logits, logits.shape[1])
        if prdc_file is not None and not record["prdc_features_hit"]:
            save_cached_features(prdc_file, prdc_feats, counts, prdc_key)
        n_fid = n_total
    else:
        mu, sigma = stats
        n_fid = int(_stats_meta(cache.path(dataset, split, prep, space.key)).get("n", 0)) or None
    return RealReference(
        dataset=dataset,
        split=split,
        n=n_fid,
        mu=mu,
        sigma=sigma,
        features=prdc_feats,
        image_shape=(c, h, w),
        network=space.network,
        preprocessing=prep,
        cache=record,
        grid=None if images is None or not grid else images[:grid],
        class_counts=counts,
    )


def reference_from_stats(
    path: str | os.PathLike, space: FeatureSpace, *, image_shape: Sequence[int], base: RealReference | None = None
) -> RealReference:
    """A reference whose ``mu``/``sigma`` come from the statistics file ``path``.

    Accepts pytorch-fid's ``.npz`` (``mu``, ``sigma``; from ``--save-stats`` or made elsewhere)
    and refine's (``feature_stats.npz`` of ``refine sample --feature-stats``, the statistics
    cache). The file's dimension must be the space's feature dimension; a file that records its
    network (refine's cache does) must record this one. ``base`` (a :func:`real_reference` of
    real images) supplies the real features for precision/recall and KID; without it only the
    Fréchet distance and IS can be computed. The record names the file and its sha256.
    """
    p = Path(path)
    mu, sigma = load_statistics(p)
    meta = load_statistics_meta(p)
    recorded = meta.get("network")
    if recorded is not None and recorded != space.network:
        raise ConfigError(
            f"--ref-stats {p} records the network {recorded!r}, not {space.network!r}; pass statistics made in this feature space"
        )
    n = meta.get("n") if isinstance(meta.get("n"), int) else None
    info = {
        "path": str(p.resolve()),
        "sha256": file_sha256(p),
        "dim": int(mu.shape[0]),
        "n": n,
        "network_recorded": recorded,
        "format": "refine" if meta else "pytorch-fid (mu, sigma)",
    }
    c, h, w = (int(v) for v in image_shape)
    if base is not None:
        return RealReference(
            dataset=base.dataset,
            split=base.split,
            n=n,
            mu=mu,
            sigma=sigma,
            features=base.features,
            image_shape=base.image_shape,
            network=space.network,
            preprocessing=base.preprocessing,
            cache=base.cache,
            grid=base.grid,
            stats_file=info,
            class_counts=base.class_counts,
        )
    return RealReference(
        dataset=None,
        split=None,
        n=n,
        mu=mu,
        sigma=sigma,
        features=None,
        image_shape=(c, h, w),
        network=space.network,
        preprocessing={},
        cache={"enabled": False},
        stats_file=info,
    )
