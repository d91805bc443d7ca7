"""The evaluation classifier: a network trained on the dataset whose features and logits score images.

Ding et al.'s protocol replaces Inception with a classifier trained on the dataset itself. This
module trains one (:func:`train_classifier`, :func:`train_classifier_file`; ``refine
train-classifier`` on the command line), writes it as a ``refine.features`` file
(:func:`save_classifier`: a state_dict and plain values, loadable with ``weights_only=True``) and
reads it back, or reads the frozen feature network of a DRE-F-SP ratio file
(:func:`feature_network_from_ratio`), which is such a classifier.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..data.images import ImageData, convert_images, load_images
from ..errors import CheckpointError, ConfigError, DataError
from ..fs import available_memory
from ..io import atomic_save, plain, safe_load
from ..nets import arch_config, load_checked
from ..ratio.fit_feature import classifier_accuracy, train_feature_net

__all__ = [
    "FEATURES_FORMAT",
    "default_classifier_arch",
    "train_classifier",
    "train_classifier_file",
    "save_classifier",
    "load_classifier",
]

FEATURES_FORMAT = "refine.features"
_VERSION = 1


# --------------------------------------------------------------------------- reading feature networks
def _build(entry_arch: Any, state: Any, path: str, role: str) -> nn.Module:
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


def classifier_from_dict(obj: dict, path: str) -> tuple[nn.Module, dict]:
    """The network of a loaded ``refine.features`` file and its description (arch, channels, classes, dataset, accuracy)."""
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


def feature_network_from_ratio(obj: dict, path: str) -> tuple[nn.Module, dict]:
    """The frozen feature network of a loaded ``feature-sp`` ratio file and its description."""
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


# --------------------------------------------------------------------------- training and files
def default_classifier_arch(
    channels: int,
    num_classes: int,
    *,
    feature_dim: int = 128,
    widths: Sequence[int] = (16, 32, 64, 128),
    stem_stride: int = 2,
) -> dict:
    """ResNet-34 (timm, not pretrained) at a quarter of the standard width: a few MB, trainable on a CPU."""
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
        report["val_acc"] = classifier_accuracy(
            net, convert_images(val.images, image_size=data.image_size, channels=data.channels), val.labels
        )
        report["n_val"] = len(val)
    return net, arch, report


def train_classifier_file(
    data: str,
    out: str | os.PathLike,
    *,
    epochs: int = 2,
    batch_size: int = 128,
    lr: float = 1e-3,
    n_train: int | None = None,
    image_size: int | None = None,
    channels: int | None = None,
    widths: Sequence[int] | str = (16, 32, 64, 128),
    feature_dim: int = 128,
    stem_stride: int = 2,
    rng: torch.Generator | None = None,
    seed: int | None = None,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> dict:
    """Train an evaluation classifier on the train split of ``data`` (``NAME:ROOT``), measure it on the test split, write it to ``out``.

    ``n_train``: a random subset of the training split (drawn with ``rng``); ``image_size`` and
    ``channels`` convert the images (default: as stored); ``widths`` (integers, or a
    comma-separated string of them), ``feature_dim`` and ``stem_stride`` shape
    :func:`default_classifier_arch`. ``seed`` is only recorded. Returns the
    file's ``meta`` record (test accuracy under ``val_acc``, on ``n_val`` images).
    """
    if epochs < 1 or batch_size < 1 or not lr > 0:
        raise ConfigError(f"need --epochs >= 1, --batch-size >= 1 and --lr > 0; got {epochs}, {batch_size}, {lr}")
    if isinstance(widths, str):
        try:
            widths = [int(v) for v in widths.split(",")]
        except ValueError:
            raise ConfigError(f"--widths takes four comma-separated integers, got {widths!r}") from None
    train = load_images(
        data, split="train", limit=n_train, rng=rng, progress=progress, image_size=image_size, channels=channels
    )
    test = load_images(data, split="test", progress=progress, image_size=image_size, channels=channels)
    arch = default_classifier_arch(
        train.channels,
        train.num_classes or int(train.labels.max()) + 1,
        feature_dim=feature_dim,
        widths=widths,
        stem_stride=stem_stride,
    )
    net, arch, report = train_classifier(
        train,
        arch=arch,
        val=test,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        rng=rng,
        device=device,
        progress=progress,
    )
    meta = {
        "dataset": data,
        "data": train.describe(),
        "val_acc": report.get("val_acc"),
        "val_split": "test",
        "n_val": report.get("n_val"),
        "history": report["history"],
        "train_time_s": report["train_time_s"],
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
    }
    save_classifier(
        out, net, arch, image_size=train.image_size, channels=train.channels, classes=train.classes, meta=meta
    )
    return meta


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
    obj = safe_load(path, what="feature network file")
    if not isinstance(obj, dict) or obj.get("format") != FEATURES_FORMAT:
        raise CheckpointError(f"{path} is not a {FEATURES_FORMAT} file; write one with save_classifier")
    net, info = classifier_from_dict(obj, str(path))
    return net.eval().requires_grad_(False).to(device), info
