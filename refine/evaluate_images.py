"""Score image samples in a named feature space: FID/FD, KID/KD, IS, precision/recall, density/coverage.

Every number comes from one :class:`FeatureSpace`, and every report names it:

- ``inception``: pytorch-fid's Inception network (2048-d pool3 features, 1008-way logits for
  the Inception Score), weights from an explicit path, ``$REFINE_INCEPTION_WEIGHTS`` or the
  torch hub cache (:func:`refine.metrics.inception.find_inception_weights`; never downloaded).
  The network's name records the weights' sha256 and says when they are not the published file
  (whose sha256 starts with ``6726825d``, as its name says).
- a dataset-trained classifier (Ding et al.'s protocol): a file written by
  :func:`save_classifier` (format ``refine.features``; train one with :func:`train_classifier`
  or ``python -m refine.evaluate_images train-classifier``), or a DRE-F-SP ratio file (``refine
  fit-ratio --kind feature-sp``), whose frozen ResNet feature network is such a classifier. Its
  features replace Inception's for FID and precision/recall; the Inception Score is computed
  from its class logits and named after it.
- ``timm:NAME`` with a local weights file (``--features-weights``): any timm network's pooled
  features (DINOv2, CLIP image towers, ...), see :mod:`refine.metrics.timm_net`; no IS.

Result keys name the space (:mod:`refine.metrics.keys`): ``fid`` and ``kid_*`` only in the
Inception space, ``fd`` and ``kd_*`` in any other; every row also carries ``features`` (the
network and its weights' hash). Which metrics run is chosen with ``metrics`` (default
:data:`refine.metrics.keys.DEFAULT_METRICS`; KID is opt-in).

The pipeline is the same for real and generated images: both become 8-bit images ``uint8 (N, C,
H, W)`` first (generated ones are rounded as if saved to PNG, so that a folder of PNG files and
the tensor it was written from score the same), then the network's own preprocessing runs on
each batch on the network's device. Real-data statistics (``mu``, ``sigma``) are cached by
:class:`refine.metrics.fid.StatisticsCache`, keyed by dataset (name and absolute root), split,
preprocessing (image size, channels, number of images) and network (name and weights hash);
the real features used for precision/recall and KID are cached next to them. Reference
statistics can also come from a file (:func:`reference_from_stats`: pytorch-fid's ``mu``/``sigma``
``.npz``, or the ``feature_stats.npz`` of ``refine sample --feature-stats``), recorded with its
sha256.

:func:`evaluate_methods` produces one row per sampler (raw generator included) with its
scores and cost through :func:`refine.evaluate.compare_methods`; :func:`score_images` scores
any set of images (a samples file or folder, see :func:`load_image_samples`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import BudgetExceededError, CheckpointError, ConfigError, DataError, NonFiniteError, ShapeError
from .metrics.features import extract_features, iter_features
from .metrics.fid import FID, StatisticsCache, StatsAccumulator, feature_statistics, frechet_distance
from .metrics.inception_score import IS_MEAN, IS_STD, inception_score
from .metrics.keys import DEFAULT_METRICS, METRICS, MetricKeys, metric_keys
from .metrics.kid import KID_SUBSET_SIZE, KID_SUBSETS, kid
from .metrics.prdc import COVERAGE, DENSITY, PRECISION, RECALL, prdc

__all__ = [
    "FEATURES_FORMAT",
    "IMAGE_COLUMNS",
    "SAMPLE_RANGES",
    "FeatureSpace",
    "RealReference",
    "inception_space",
    "classifier_space",
    "timm_space",
    "load_feature_space",
    "reference_from_stats",
    "to_uint8",
    "real_reference",
    "score_images",
    "evaluate_methods",
    "load_image_samples",
    "save_image_panels",
    "markdown_report",
    "train_classifier",
    "save_classifier",
    "load_classifier",
]

FEATURES_FORMAT = "refine.features"
_VERSION = 1
#: sha256 prefix of the published FID Inception weights (the hash part of their file name).
_FID_WEIGHTS_SHA256_PREFIX = "6726825d"
#: The columns of an image evaluation table in the Inception space (see :func:`image_columns` for the others).
IMAGE_COLUMNS = [
    "method",
    FID,
    IS_MEAN,
    IS_STD,
    PRECISION,
    RECALL,
    DENSITY,
    COVERAGE,
    "acceptance_rate",
    "g_evals_per_sample",
    "d_evals_per_sample",
    "wall_time_s",
]
_COST_COLUMNS = ["acceptance_rate", "g_evals_per_sample", "d_evals_per_sample", "wall_time_s"]
#: Value ranges a samples file may declare; ``auto`` infers one from the values (see :func:`load_image_samples`).
SAMPLE_RANGES = ("auto", "[-1,1]", "[0,1]", "[0,255]")
#: Seed of the random subset of real images used for precision/recall (fixed, so the cache is shared across --seed).
_SUBSET_SEED = 0


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _module_device(net: nn.Module) -> torch.device:
    for t in net.parameters():
        return t.device
    for t in net.buffers():
        return t.device
    return torch.device("cpu")


# --------------------------------------------------------------------------- feature spaces
@dataclass
class FeatureSpace:
    """A frozen network that maps 8-bit images to features (and, where it has them, class logits).

    ``network`` is the human-readable name every reported number carries; ``key`` identifies
    the network and its weights in the statistics cache; ``logits`` names the logits the
    Inception Score is computed from (None: no IS in this space).
    """

    short: str
    network: str
    key: str
    module: nn.Module
    transform: Callable[[torch.Tensor], torch.Tensor]
    logits: str | None
    source: dict = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return _module_device(self.module)

    @property
    def inception(self) -> bool:
        """Whether this is the Inception space, the only one whose distances are called FID and KID."""
        return self.short == "inception"

    @property
    def keys(self) -> MetricKeys:
        """The result keys of this space (``fid``/``kid_*`` for Inception, ``fd``/``kd_*`` otherwise)."""
        return metric_keys(self.inception)

    def describe(self) -> dict:
        return {
            "short": self.short,
            "network": self.network,
            "cache_key": self.key,
            "logits": self.logits,
            **self.source,
        }

    def extract(
        self, images: torch.Tensor, *, batch_size: int = 50, progress: bool = False, desc: str = "features"
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Features ``(N, D)`` and logits ``(N, K)`` (or None) of ``uint8 (N, C, H, W)`` images, on the CPU."""
        _check_uint8(images, "images")
        if self.logits is None:
            return extract_features(
                self.module, images, batch_size=batch_size, transform=self.transform, progress=progress, desc=desc
            ), None
        return extract_features(
            self.module,
            images,
            batch_size=batch_size,
            transform=self.transform,
            with_logits=True,
            progress=progress,
            desc=desc,
        )


def _check_uint8(images: Any, what: str) -> None:
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.dim() != 4:
        found = f"{images.dtype} {tuple(images.shape)}" if isinstance(images, torch.Tensor) else type(images).__name__
        raise ShapeError(
            f"{what} must be 8-bit images uint8 (N, C, H, W); got {found} (convert with refine.evaluate_images.to_uint8)"
        )


def inception_space(weights: str | os.PathLike | None = None, *, device: torch.device | str = "cpu") -> FeatureSpace:
    """pytorch-fid's Inception (pool3 features, 1008-way logits) with the FID weights found locally."""
    from .metrics.inception import FID_WEIGHTS_FILE, find_inception_weights, load_inception, to_inception_input

    path = find_inception_weights(weights)
    net = load_inception(path, device=device)
    sha = _sha256(path)
    official = sha.startswith(_FID_WEIGHTS_SHA256_PREFIX)
    note = "" if official else f"; NOT the published weights (sha256 {sha[:12]}), not comparable with published numbers"
    return FeatureSpace(
        short="inception",
        network=f"FID Inception v3, pool3 2048-d ({FID_WEIGHTS_FILE}{note})",
        key=f"inception-fid-{sha[:16]}",
        module=net,
        transform=lambda x: to_inception_input(x, value_range=(0.0, 255.0)),
        logits="Inception 1008-way logits",
        source={"weights": str(path), "sha256": sha, "published_weights": official},
    )


class _FeaturesAndLogits(nn.Module):
    """``x -> (net.features(x), logits)`` in one pass (``net.classifier`` on the features when it has one)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor):
        f = self.net.features(x)
        head = getattr(self.net, "classifier", None)
        logits = head(f) if isinstance(head, nn.Module) else self.net(x)
        return f, logits


def _classifier_transform(channels: int, image_size: int | None) -> Callable[[torch.Tensor], torch.Tensor]:
    """8-bit images -> float in [-1, 1] with the network's channels and size (bilinear, antialiased)."""
    luma = torch.tensor([0.299, 0.587, 0.114])

    def transform(x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        if x.shape[1] != channels:
            if channels == 3 and x.shape[1] == 1:
                x = x.expand(-1, 3, -1, -1)
            elif channels == 1 and x.shape[1] == 3:
                x = (x * luma.to(x.device).view(1, 3, 1, 1)).sum(1, keepdim=True)
            else:
                raise ShapeError(f"the feature network takes {channels}-channel images; got {x.shape[1]} channels")
        x = x / 127.5 - 1.0
        if image_size is not None and (x.shape[-1] != image_size or x.shape[-2] != image_size):
            x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=True)
        return x

    return transform


def classifier_space(path: str | os.PathLike, *, device: torch.device | str = "cpu") -> FeatureSpace:
    """The features and class logits of a dataset-trained classifier stored at ``path``.

    ``path``: a ``refine.features`` file (:func:`save_classifier`) or a ``feature-sp`` ratio
    file (its frozen feature network). Images are converted to the channels and size the
    network was trained on.
    """
    from .io import RATIO_FORMAT, safe_load

    p = Path(path)
    obj = safe_load(p, what="feature network file")
    fmt = obj.get("format") if isinstance(obj, dict) else None
    if fmt == FEATURES_FORMAT:
        net, info = _classifier_from_dict(obj, str(p))
        what = "classifier"
    elif fmt == RATIO_FORMAT and obj.get("kind") == "feature-sp":
        net, info = _classifier_from_ratio(obj, str(p))
        what = "DRE-F-SP feature network"
    else:
        if fmt == RATIO_FORMAT:
            found = f"a ratio file of kind {obj.get('kind')!r}"
        elif fmt:
            found = f"a {fmt} file"
        else:
            found = "a dict without a format entry" if isinstance(obj, dict) else f"a {type(obj).__name__}"
        raise CheckpointError(
            f"--features {p} holds {found}, not a feature network; pass a classifier file ({FEATURES_FORMAT}, "
            "python -m refine.evaluate_images train-classifier) or a feature-sp ratio file, or 'inception'"
        )
    net = net.eval().requires_grad_(False).to(device)
    sha = _sha256(p)
    arch = info["arch"].get("name", "?")
    classes = info.get("num_classes")
    trained = f", trained on {info['dataset']}" if info.get("dataset") else ""
    acc = f", held-out accuracy {info['val_acc']:.4f}" if isinstance(info.get("val_acc"), (int, float)) else ""
    dim = info.get("feature_dim")
    return FeatureSpace(
        short="classifier",
        network=f"{what} {arch} {dim}-d features from {p.name} (sha256 {sha[:12]}{trained}{acc})",
        key=f"classifier-{arch}-{sha[:16]}",
        module=_FeaturesAndLogits(net).eval(),
        transform=_classifier_transform(info["channels"], info.get("image_size")),
        logits=f"{p.name} {classes}-way class logits" if classes else f"{p.name} class logits",
        source={
            "path": str(p),
            "sha256": sha,
            "kind": what,
            "arch": info["arch"],
            "image_size": info.get("image_size"),
            "channels": info["channels"],
        },
    )


def _build(entry_arch: Any, state: Any, path: str, role: str) -> nn.Module:
    from .fs import available_memory
    from .nets import load_checked

    net = load_checked(entry_arch, state, path=path, role=role, memory_limit=available_memory() // 2)
    if not callable(getattr(net, "features", None)):
        raise CheckpointError(
            f"{path}: the {role} ({type(net).__name__}) has no features(x) method; use a feature network such as resnet34-features"
        )
    return net


def _net_info(net: nn.Module, arch: dict) -> dict:
    kwargs = dict(arch.get("kwargs") or {})
    channels = int(getattr(net, "in_channels", kwargs.get("in_channels", 3)))
    head = getattr(net, "classifier", None)
    num_classes = int(head.out_features) if isinstance(head, nn.Linear) else kwargs.get("num_classes")
    dim = int(getattr(net, "feature_dim", kwargs.get("feature_dim", 0))) or None
    return {"arch": arch, "channels": channels, "num_classes": num_classes, "feature_dim": dim}


def _classifier_from_dict(obj: dict, path: str) -> tuple[nn.Module, dict]:
    if obj.get("version") != _VERSION:
        raise CheckpointError(
            f"{path}: unsupported {FEATURES_FORMAT} version {obj.get('version')!r} (this refine reads {_VERSION})"
        )
    if not isinstance(obj.get("arch"), dict):
        raise CheckpointError(f"{path}: a {FEATURES_FORMAT} file needs arch and state entries")
    net = _build(obj["arch"], obj.get("state"), path, "feature network")
    meta = obj.get("meta") or {}
    info = _net_info(net, obj["arch"])
    info.update(image_size=obj.get("image_size"), dataset=meta.get("dataset"), val_acc=meta.get("val_acc"))
    return net, info


def _classifier_from_ratio(obj: dict, path: str) -> tuple[nn.Module, dict]:
    entry = obj.get("feature_net")
    if not isinstance(entry, dict) or "arch" not in entry:
        raise CheckpointError(f"{path}: the feature-sp ratio file has no feature_net entry")
    net = _build(entry["arch"], entry.get("state"), path, "feature network")
    meta = obj.get("meta") or {}
    fmeta = meta.get("feature_net") if isinstance(meta.get("feature_net"), dict) else {}
    info = _net_info(net, entry["arch"])
    info.update(
        image_size=obj.get("image_size"), dataset=meta.get("dataset") or meta.get("data"), val_acc=fmeta.get("val_acc")
    )
    return net, info


def timm_space(name: str, weights: str | os.PathLike, *, device: torch.device | str = "cpu") -> FeatureSpace:
    """The pooled features of timm model ``name`` with the weights in the local file ``weights`` (never downloaded)."""
    from .metrics.timm_net import build_timm_features

    net, transform, info = build_timm_features(name, weights, device=device)
    sha = info["sha256"]
    return FeatureSpace(
        short=f"timm-{name}",
        network=f"timm {name}, {info['feature_dim']}-d pooled features (weights {Path(weights).name}, sha256 {sha[:12]})",
        key=f"timm-{name}-{sha[:16]}",
        module=net,
        transform=transform,
        logits=None,
        source={"path": str(weights), **info},
    )


def load_feature_space(
    features: str | os.PathLike,
    *,
    inception_weights: str | os.PathLike | None = None,
    features_weights: str | os.PathLike | None = None,
    device: torch.device | str = "cpu",
) -> FeatureSpace:
    """``"inception"`` -> :func:`inception_space`; ``"timm:NAME"`` -> :func:`timm_space` with ``features_weights``;
    any other value is a file for :func:`classifier_space`."""
    from .metrics.timm_net import is_timm_spec, timm_name

    text = str(features).strip()
    if inception_weights is not None and text.lower() != "inception":
        raise ConfigError(
            f"--inception-weights is for --features inception; --features {features} names another network"
        )
    if is_timm_spec(text):
        if features_weights is None:
            raise ConfigError(
                f"--features {text} needs --features-weights PATH (a safetensors or state_dict file of that model); "
                "refine never downloads weights"
            )
        return timm_space(timm_name(text), features_weights, device=device)
    if features_weights is not None:
        raise ConfigError(
            f"--features-weights is for --features timm:NAME; --features {features} brings its own weights"
        )
    if text.lower() == "inception":
        return inception_space(inception_weights, device=device)
    return classifier_space(features, device=device)


# --------------------------------------------------------------------------- images to 8 bits
_RANGES = {"[-1,1]": (-1.0, 1.0), "[0,1]": (0.0, 1.0), "[0,255]": (0.0, 255.0)}


def to_uint8(x: torch.Tensor, output_range: str) -> torch.Tensor:
    """Float images in ``output_range`` (``[-1,1]``, ``[0,1]`` or ``[0,255]``) -> ``uint8`` on the CPU, rounded as a PNG stores them.

    Values beyond the declared range by more than 1% of its width are an error (the range was
    probably declared wrongly); smaller excursions are clipped.
    """
    if output_range not in _RANGES:
        raise ConfigError(
            f"images need a declared value range ({', '.join(_RANGES)}), got {output_range!r}; "
            "declare the generator's output range (e.g. --output-range [-1,1])"
        )
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ShapeError(
            f"images must be (N, C, H, W); got {tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}"
        )
    if x.dtype == torch.uint8:
        return x.cpu()
    x = x.detach().float().cpu()
    if not torch.isfinite(x).all():
        raise NonFiniteError("images contain NaN or inf; check the generator")
    lo, hi = _RANGES[output_range]
    if x.numel():
        found_lo, found_hi = float(x.amin()), float(x.amax())
        tol = 0.01 * (hi - lo)
        if found_lo < lo - tol or found_hi > hi + tol:
            raise ConfigError(
                f"images have values in [{found_lo:.4g}, {found_hi:.4g}] but the range {output_range} was declared; "
                "declare the range they are in"
            )
    return ((x - lo) * (255.0 / (hi - lo))).round_().clamp_(0, 255).to(torch.uint8)


# --------------------------------------------------------------------------- the real reference
@dataclass
class RealReference:
    """Real-image statistics (Fréchet distance) and features (precision/recall, KID) in one feature space.

    ``stats_file`` is set when ``mu``/``sigma`` come from a statistics file (path, sha256, what
    it records) rather than from ``dataset``; ``features`` is None when there are no real images
    (a statistics file alone), which allows the Fréchet distance and IS only.
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

    def describe(self) -> dict:
        out = {
            "dataset": self.dataset,
            "split": self.split,
            "n_fid": self.n,
            "n_prdc": None if self.features is None else int(self.features.shape[0]),
            "trace_sigma": float(np.trace(self.sigma)),
            "image_shape": list(self.image_shape),
            "network": self.network,
            "preprocessing": self.preprocessing,
            "cache": self.cache,
        }
        if self.stats_file is not None:
            out["statistics_file"] = self.stats_file
        return out


def _prdc_path(cache: StatisticsCache, key: str) -> Path:
    return cache.root / "prdc_features" / f"{key}.npz"


def _load_prdc(path: Path, key_fields: dict) -> torch.Tensor | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            meta = json.loads(str(f["meta"]))
            feats = np.asarray(f["features"], dtype=np.float32)
    except (OSError, ValueError, KeyError) as e:
        raise DataError(
            f"cached features {path} cannot be read ({str(e).splitlines()[0][:100]}); delete the file to recompute it"
        ) from None
    if meta.get("key") != key_fields:
        raise DataError(
            f"cached features {path} record key {meta.get('key')!r}, not {key_fields!r}; delete the file to recompute it"
        )
    return torch.from_numpy(feats)


def _save_prdc(path: Path, feats: torch.Tensor, key_fields: dict) -> None:
    from .io import atomic_write

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        np.savez(
            f, features=feats.numpy().astype(np.float32), meta=np.array(json.dumps({"key": key_fields}, sort_keys=True))
        )


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
    from .data.images import convert_images, load_images, parse_data_spec

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
    stats = prdc_feats = prdc_file = None
    record: dict = {"enabled": cache is not None}
    if cache is not None:
        stats = cache.load(dataset, split, prep, space.key)
        prdc_file = _prdc_path(cache, cache.key(dataset, split, prdc_prep, space.key))
        prdc_feats = _load_prdc(prdc_file, prdc_key)
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
            kept, start = [], 0
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
                start += len(f)
            mu, sigma = acc.compute()
            if prdc_feats is None:
                prdc_feats = torch.cat(kept)
            if cache is not None:
                cache.save(dataset, split, prep, space.key, mu, sigma, meta={"n": n_total, "network": space.network})
        else:
            mu, sigma = stats
            prdc_feats, _ = space.extract(images[subset], batch_size=batch_size, progress=progress, desc=desc)
        if prdc_file is not None and not record["prdc_features_hit"]:
            _save_prdc(prdc_file, prdc_feats, prdc_key)
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
    )


def _stats_meta(path: Path) -> dict:
    from .metrics.fid import load_statistics_meta

    try:
        return load_statistics_meta(path)
    except Exception:  # noqa: BLE001 - the count is informational only
        return {}


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
    from .metrics.fid import load_statistics, load_statistics_meta

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
        "sha256": _sha256(p),
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


# --------------------------------------------------------------------------- scoring
def row_features(space: FeatureSpace) -> dict:
    """What every result row says about its feature space: the network (with its weights) and the weights' sha256."""
    return {"features": space.network, "features_sha256": space.source.get("sha256")}


def check_metrics(
    metrics: Sequence[str], space: FeatureSpace, reference: RealReference | None = None
) -> tuple[str, ...]:
    """``metrics`` checked against what the space and the reference can give; returns them as a tuple."""
    metrics = tuple(metrics)
    unknown = [m for m in metrics if m not in METRICS]
    if unknown or not metrics:
        raise ConfigError(
            f"metrics must be a non-empty subset of {', '.join(METRICS)}; got {', '.join(metrics) or 'none'}"
        )
    if "is" in metrics and space.logits is None:
        raise ConfigError(
            f"the Inception Score needs class logits, which {space.network} does not have; drop 'is' from --metrics"
        )
    needs_real = [m for m in metrics if m in ("kid", "prdc")]
    if reference is not None and reference.features is None and needs_real:
        raise ConfigError(
            f"{', '.join(needs_real)} compare with real images, and a statistics file holds none; pass --data NAME:ROOT too "
            "or choose --metrics fid,is"
        )
    return metrics


def score_images(
    space: FeatureSpace,
    images: torch.Tensor,
    reference: RealReference,
    *,
    k: int = 3,
    is_splits: int = 10,
    is_rng: torch.Generator | None = None,
    batch_size: int = 50,
    progress: bool = False,
    desc: str = "sample features",
    metrics: Sequence[str] | None = None,
    kid_subsets: int = KID_SUBSETS,
    kid_subset_size: int = KID_SUBSET_SIZE,
    kid_rng: torch.Generator | None = None,
) -> dict:
    """The chosen ``metrics`` of 8-bit ``images`` against ``reference``, under the space's keys (:attr:`FeatureSpace.keys`).

    ``metrics`` (default :data:`~refine.metrics.keys.DEFAULT_METRICS`, IS dropped where the
    space has no logits): ``fid`` Fréchet distance, ``kid`` kernel distance (mean, std over
    ``kid_subsets`` subsets of ``kid_subset_size`` real and sample features, drawn with
    ``kid_rng``; the size used is under ``kid_subset_size``), ``is`` Inception Score,
    ``prdc`` precision/recall/density/coverage with ``k`` neighbours.
    """
    if metrics is None:
        metrics = tuple(m for m in DEFAULT_METRICS if m != "is" or space.logits is not None)
    metrics = check_metrics(metrics, space, reference)
    keys = space.keys
    _check_uint8(images, "images")
    if tuple(images.shape[1:]) != tuple(reference.image_shape):
        raise ShapeError(
            f"the images are {tuple(images.shape[1:])} but the real reference was prepared at {tuple(reference.image_shape)}"
        )
    if len(images) < 2:
        raise ShapeError(f"FID needs at least 2 images, got {len(images)}")
    if reference.network != space.network:
        raise ConfigError(f"the real reference was computed with {reference.network}, not with {space.network}")
    if "is" in metrics and len(images) < is_splits:
        raise ConfigError(
            f"the Inception Score with {is_splits} splits needs at least {is_splits} samples, got {len(images)}; "
            "lower the number of splits or draw more samples"
        )
    if "prdc" in metrics:
        if len(images) <= k:
            raise ConfigError(
                f"precision/recall with k={k} nearest neighbours need more than {k} samples, got {len(images)}"
            )
        if len(reference.features) <= k:
            raise ConfigError(
                f"precision/recall with k={k} nearest neighbours need more than {k} real images, got {len(reference.features)}"
            )
    feats, logits = space.extract(images, batch_size=batch_size, progress=progress, desc=desc)
    out: dict = {"n": int(len(images))}
    if "fid" in metrics:
        if feats.shape[1] != reference.mu.shape[0]:
            raise ShapeError(
                f"the reference statistics are {reference.mu.shape[0]}-dimensional but {space.network} gives "
                f"{feats.shape[1]}-d features; use statistics made in this feature space"
            )
        out[keys.fd] = frechet_distance(reference.mu, reference.sigma, *feature_statistics(feats))
    if "kid" in metrics:
        out[keys.kd_mean], out[keys.kd_std], out["kid_subset_size"] = kid(
            reference.features, feats, subsets=kid_subsets, subset_size=kid_subset_size, rng=kid_rng
        )
        out["kid_subsets"] = int(kid_subsets)
    if "is" in metrics:
        out[IS_MEAN], out[IS_STD] = inception_score(logits, splits=is_splits, rng=is_rng)
    if "prdc" in metrics:
        out.update(
            prdc(reference.features.to(space.device), feats, k=k)
        )  # distances on the network's device (a GPU when there is one)
    return out


def evaluate_methods(
    target,
    methods: list[tuple[str, dict]],
    n: int,
    *,
    seed: int,
    space: FeatureSpace,
    reference: RealReference,
    output_range: str,
    k: int = 3,
    is_splits: int = 10,
    batch_size: int = 50,
    progress: bool = False,
    real: torch.Tensor | None = None,
    metrics: Sequence[str] | None = None,
    kid_subsets: int = KID_SUBSETS,
    kid_subset_size: int = KID_SUBSET_SIZE,
) -> list[dict]:
    """One row per method (``"none"`` is the raw generator): image scores plus cost (see :func:`refine.evaluate.compare_methods`).

    Each method's samples are rounded to 8 bits and scored in ``space`` against ``reference``;
    the Inception Score's splits and KID's subsets are drawn with ``seed``. Rows hold the samples
    (8-bit) under ``_x`` for pictures, and name the network under ``features`` (its weights'
    hash under ``features_sha256``). ``metrics``: see :func:`score_images`. A method that exceeds its
    proposal budget gets a row with its ``error`` instead of scores; other errors stop the run.
    """
    from .evaluate import compare_methods

    def score(x: torch.Tensor) -> dict:
        x8 = to_uint8(x, output_range)
        s = score_images(
            space,
            x8,
            reference,
            k=k,
            is_splits=is_splits,
            is_rng=torch.Generator().manual_seed(seed),
            batch_size=batch_size,
            progress=progress,
            metrics=metrics,
            kid_subsets=kid_subsets,
            kid_subset_size=kid_subset_size,
            kid_rng=torch.Generator().manual_seed(seed),
        )
        return {**s, **row_features(space), "_x8": x8[:64]}

    if metrics is not None:
        check_metrics(metrics, space, reference)

    from .samplers import get_sampler

    for name, opts in methods:  # every option is checked before any method runs
        get_sampler(name, **opts)
    rows = []
    for name, opts in methods:
        try:
            (row,) = compare_methods(target, [(name, opts)], n, seed=seed, score=score, progress=progress, real=real)
        except (
            BudgetExceededError
        ) as e:  # a method that cannot deliver within its proposal budget is a result, not the end of the table
            rows.append(
                {"method": name, "options": get_sampler(name, **opts).options(), "error": str(e).splitlines()[0]}
            )
            continue
        row["_x"] = row.pop("_x8")
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- samples from files
def _infer_range(x: np.ndarray) -> str:
    if x.size == 0:
        return "[0,1]"
    lo, hi = float(np.nanmin(x)), float(np.nanmax(x))
    if hi > 1.0 + 1e-3:
        return "[0,255]"
    if lo < -1e-3:
        return "[-1,1]"
    return "[0,1]"


def _as_nchw(a: np.ndarray, path: Path) -> np.ndarray:
    if a.ndim == 3:
        return a[:, None]
    if a.ndim != 4:
        raise ShapeError(f"{path}: expected images (N, C, H, W) or (N, H, W, C); found an array of shape {a.shape}")
    if a.shape[1] in (1, 3):
        return a
    if a.shape[3] in (1, 3):
        return np.ascontiguousarray(a.transpose(0, 3, 1, 2))
    raise ShapeError(
        f"{path}: expected images with 1 or 3 channels, (N, C, H, W) or (N, H, W, C); found shape {a.shape}"
    )


def load_image_samples(
    path: str | os.PathLike, *, value_range: str = "auto", progress: bool = False
) -> tuple[torch.Tensor, dict]:
    """8-bit images ``uint8 (N, C, H, W)`` from an ``.npz`` file or a folder of image files, and how they were read.

    - a folder: every PNG/JPEG/... file in it (or in its class subfolders), decoded with PIL;
    - an ``.npz``: the array ``x`` (as ``refine sample`` writes it), ``arr_0`` (the ADM/EDM convention,
      ``refine sample --format npz-uint8``), or the file's only array,
      as ``(N, C, H, W)``, ``(N, H, W, C)`` or ``(N, H, W)``. ``uint8`` arrays are taken as they
      are; float arrays are in ``value_range``, which ``auto`` infers: values above 1 mean
      ``[0,255]``, negative values ``[-1,1]``, otherwise ``[0,1]``.
    """
    from .data.images import load_images
    from .fs import read_npz

    p = Path(path)
    if value_range not in SAMPLE_RANGES:
        raise ConfigError(f"unknown samples value range {value_range!r}; valid: {', '.join(SAMPLE_RANGES)}")
    if p.is_dir():
        data = load_images(f"folder:{p}", split="train", progress=progress)
        return data.images, {"path": str(p), "kind": "folder", "n": len(data), "value_range": "[0,255]"}
    arrays = read_npz(p, "samples", finite=False)  # regular file, headers checked against bytes, no objects
    names = list(arrays)
    if "x" in names:
        name = "x"
    elif (
        "arr_0" in names
    ):  # the ADM/EDM convention (refine sample --format npz-uint8): arr_0 NHWC uint8, arr_1 labels if any
        name = "arr_0"
    elif len(names) == 1:
        name = names[0]
    else:
        raise DataError(
            f"{p} has no array 'x' or 'arr_0' and several others ({', '.join(names)}); store the images as x"
        )
    a = arrays[name]
    a = _as_nchw(a, p)
    if a.dtype == np.uint8:
        rng_used = "[0,255]"
        x = torch.from_numpy(np.ascontiguousarray(a))
    else:
        if not np.issubdtype(a.dtype, np.number):
            raise DataError(f"{p}: array {name} has dtype {a.dtype}; expected numbers")
        a = a.astype(np.float32)
        if not np.isfinite(a).all():
            raise NonFiniteError(f"{p}: array {name} contains NaN or inf")
        rng_used = _infer_range(a) if value_range == "auto" else value_range
        x = to_uint8(torch.from_numpy(a), rng_used)
    return x, {
        "path": str(p),
        "kind": "npz",
        "array": name,
        "n": int(len(x)),
        "value_range": rng_used,
        "value_range_source": "uint8" if a.dtype == np.uint8 else ("inferred" if value_range == "auto" else "declared"),
    }


# --------------------------------------------------------------------------- reports
def image_columns(space: FeatureSpace, *, cost: bool = True, metrics: Sequence[str] | None = None) -> list[str]:
    """Table columns for ``metrics`` (default: the defaults the space allows) under the space's keys."""
    keys = space.keys
    if metrics is None:
        metrics = tuple(m for m in DEFAULT_METRICS if m != "is" or space.logits is not None)
    groups = {
        "fid": [keys.fd],
        "kid": [keys.kd_mean, keys.kd_std],
        "is": [keys.is_mean, keys.is_std],
        "prdc": list(keys.prdc),
    }
    cols = ["method"] + [c for m in METRICS if m in metrics for c in groups[m]]
    return cols + (_COST_COLUMNS if cost else [])


def markdown_report(
    rows: list[dict],
    space: FeatureSpace,
    reference: RealReference,
    *,
    cost: bool = True,
    k: int = 3,
    is_splits: int = 10,
    metrics: Sequence[str] | None = None,
) -> str:
    """A caption naming the network and the real reference, then the table."""
    from .evaluate import markdown_table

    if metrics is None:
        metrics = tuple(m for m in DEFAULT_METRICS if m != "is" or space.logits is not None)
    keys = space.keys
    size = f"{reference.image_shape[1]}x{reference.image_shape[2]}x{reference.image_shape[0]}"
    parts = []
    if "fid" in metrics:
        sf = reference.stats_file
        if sf is not None:
            parts.append(
                f"{keys.fd} against the statistics file {sf['path']} (sha256 {sf['sha256'][:12]}, "
                f"{sf['n'] if sf['n'] is not None else 'unrecorded number of'} images)"
            )
        else:
            parts.append(
                f"{keys.fd} against {reference.n if reference.n is not None else 'the cached'} images of {reference.dataset} "
                f"[{reference.split}] at {size}"
            )
    if "is" in metrics:
        parts.append(f"IS from {space.logits}, {is_splits} splits")
    n_real = None if reference.features is None else len(reference.features)
    if "kid" in metrics:
        parts.append(
            f"{keys.kd_mean}/{keys.kd_std} (cubic polynomial kernel, unbiased MMD², mean/std over subsets) against {n_real} "
            f"images of {reference.dataset} [{reference.split}]"
        )
    if "prdc" in metrics:
        parts.append(
            f"precision/recall/density/coverage with k = {k} against {n_real} images of {reference.dataset} [{reference.split}]"
        )
    caption = f"Features: {space.network}.\n" + "; ".join(parts) + ". Samples rounded to 8 bits.\n\n"
    cols = image_columns(space, cost=cost, metrics=metrics) + (["error"] if any("error" in r for r in rows) else [])
    return caption + markdown_table(rows, cols)


def save_image_panels(
    path: str | os.PathLike,
    panels: dict[str, torch.Tensor],
    *,
    subtitles: dict[str, str] | None = None,
    max_images: int = 64,
    cols: int = 6,
) -> None:
    """Sample grids side by side (8-bit images ``(N, C, H, W)`` per panel), written atomically as a PNG."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from .io import atomic_write
    from .plot import image_grid

    k = len(panels)
    if k == 0:
        raise ConfigError("no panels to draw")
    ncols = min(k, cols)
    nrows = math.ceil(k / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.0 * ncols, 3.4 * nrows), squeeze=False)
    for ax in axes.flat:
        ax.set_visible(False)
    for ax, (title, x) in zip(axes.flat, panels.items()):
        _check_uint8(x, f"panel {title!r}")
        ax.set_visible(True)
        x = x[:max_images]
        grid = image_grid(x.float() / 255.0, output_range="[0,1]", nrow=int(math.ceil(math.sqrt(len(x)))))
        ax.imshow(grid, cmap="gray" if grid.ndim == 2 else None, vmin=0, vmax=255)
        sub = (subtitles or {}).get(title)
        ax.set_title(title + (f"\n{sub}" if sub else ""), fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=100, bbox_inches="tight")  # keeps three-line titles inside the picture
    plt.close(fig)


# --------------------------------------------------------------------------- a classifier trained on the dataset
def default_classifier_arch(
    channels: int,
    num_classes: int,
    *,
    feature_dim: int = 128,
    widths: Sequence[int] = (16, 32, 64, 128),
    stem_stride: int = 2,
) -> dict:
    """ResNet-34 (timm, not pretrained) at a quarter of the standard width: a few MB, trainable on a CPU."""
    from .nets import arch_config

    return arch_config(
        "resnet34-features",
        in_channels=int(channels),
        num_classes=int(num_classes),
        feature_dim=int(feature_dim),
        widths=[int(w) for w in widths],
        stem="cifar",
        stem_stride=int(stem_stride),
    )


def train_classifier(
    data,
    *,
    arch: dict | None = None,
    val=None,
    epochs: int = 2,
    batch_size: int = 128,
    lr: float = 1e-3,
    rng: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> tuple[nn.Module, dict, dict]:
    """Train an evaluation classifier on a labelled :class:`refine.data.images.ImageData` (cross-entropy, Adam, cosine decay).

    ``val``: another ImageData to report the accuracy on (e.g. the test split). Returns
    ``(network in eval mode, arch config, report)``; save with :func:`save_classifier`.
    """
    from .data.images import ImageData
    from .ratio.feature import classifier_accuracy, train_feature_net

    if not isinstance(data, ImageData):
        raise ConfigError("train_classifier takes an ImageData (see refine.data.images.load_images)")
    if data.labels is None:
        raise DataError(
            f"{data.spec} has no class labels; an evaluation classifier needs a labelled dataset (class subfolders)"
        )
    arch = arch or default_classifier_arch(data.channels, data.num_classes or int(data.labels.max()) + 1)
    net, report = train_feature_net(
        data.images,
        data.labels,
        arch=arch,
        epochs=epochs,
        batch_size=min(batch_size, len(data)),
        lr=lr,
        rng=rng,
        device=device,
        progress=progress,
    )
    if val is not None:
        if not isinstance(val, ImageData) or val.labels is None:
            raise DataError("val must be a labelled ImageData")
        from .data.images import convert_images

        report["val_acc"] = classifier_accuracy(
            net, convert_images(val.images, image_size=data.image_size, channels=data.channels), val.labels
        )
        report["n_val"] = len(val)
    return net, arch, report


def save_classifier(
    path: str | os.PathLike,
    net: nn.Module,
    arch: dict,
    *,
    image_size: int,
    channels: int,
    classes=None,
    meta: dict | None = None,
) -> None:
    """Write a ``refine.features`` file (a state_dict and plain values; loads with ``weights_only=True``)."""
    from .io import atomic_save, plain

    if not callable(getattr(net, "features", None)):
        raise ConfigError(f"{type(net).__name__} has no features(x) method; an evaluation network needs one")
    atomic_save(
        {
            "format": FEATURES_FORMAT,
            "version": _VERSION,
            "arch": plain(arch),
            "state": {k: v.detach().cpu() for k, v in net.state_dict().items()},
            "image_size": int(image_size),
            "channels": int(channels),
            "classes": list(classes) if classes is not None else None,
            "meta": plain(dict(meta or {})),
        },
        path,
    )


def load_classifier(path: str | os.PathLike, *, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """The network of a ``refine.features`` file (eval mode, no gradients) and its description."""
    from .io import safe_load

    obj = safe_load(path, what="feature network file")
    if not isinstance(obj, dict) or obj.get("format") != FEATURES_FORMAT:
        raise CheckpointError(f"{path} is not a {FEATURES_FORMAT} file; write one with save_classifier")
    net, info = _classifier_from_dict(obj, str(path))
    return net.eval().requires_grad_(False).to(device), info


def _train_classifier_main(args) -> int:
    from .data.images import load_images

    rng = torch.Generator().manual_seed(args.seed)
    from .cli.common import resolve_device

    dev = resolve_device(args.device)
    if args.epochs < 1 or args.batch_size < 1 or not args.lr > 0:
        raise ConfigError(
            f"need --epochs >= 1, --batch-size >= 1 and --lr > 0; got {args.epochs}, {args.batch_size}, {args.lr}"
        )
    try:
        widths = [int(v) for v in args.widths.split(",")]
    except ValueError:
        raise ConfigError(f"--widths takes four comma-separated integers, got {args.widths!r}") from None
    train = load_images(
        args.data,
        split="train",
        limit=args.n_train,
        rng=rng,
        progress=True,
        image_size=args.image_size,
        channels=args.channels,
    )
    test = load_images(args.data, split="test", progress=True, image_size=args.image_size, channels=args.channels)
    arch = default_classifier_arch(
        train.channels,
        train.num_classes or int(train.labels.max()) + 1,
        feature_dim=args.feature_dim,
        widths=widths,
        stem_stride=args.stem_stride,
    )
    net, arch, report = train_classifier(
        train,
        arch=arch,
        val=test,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        rng=rng,
        device=dev,
        progress=True,
    )
    meta = {
        "dataset": args.data,
        "data": train.describe(),
        "val_acc": report.get("val_acc"),
        "val_split": "test",
        "n_val": report.get("n_val"),
        "history": report["history"],
        "train_time_s": report["train_time_s"],
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seed": args.seed,
    }
    save_classifier(
        args.out, net, arch, image_size=train.image_size, channels=train.channels, classes=train.classes, meta=meta
    )
    print(
        f"classifier: test accuracy {report['val_acc']:.4f} on {report['n_val']} images, {report['train_time_s']:.0f}s -> {args.out}"
    )
    return 0


def _main(argv: Sequence[str] | None = None) -> int:
    import argparse
    import sys

    from .errors import RefineError

    p = argparse.ArgumentParser(prog="python -m refine.evaluate_images", description="Evaluation feature networks.")
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser(
        "train-classifier", help="train a classifier on a labelled image dataset, for refine eval --features FILE"
    )
    t.add_argument("--data", required=True, help="NAME:ROOT, e.g. mnist:/data/mnist")
    t.add_argument("--out", required=True, help="file to write (format refine.features)")
    t.add_argument("--epochs", type=int, default=2)
    t.add_argument("--batch-size", type=int, default=128)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--n-train", type=int, default=None, help="random subset of the training split (default: all of it)")
    t.add_argument("--image-size", type=int, default=None, help="resize the images (default: as stored)")
    t.add_argument("--channels", type=int, default=None, help="convert to 1 or 3 channels (default: as stored)")
    t.add_argument("--widths", default="16,32,64,128", help="channels of the four ResNet-34 stages")
    t.add_argument("--feature-dim", type=int, default=128)
    t.add_argument("--stem-stride", type=int, default=2)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    try:
        return _train_classifier_main(args)
    except (RefineError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(_main())
