"""Class-conditional evaluation: intra-FID, label accuracy and the class histogram.

- **Intra-FID** (Miyato & Koyama 2018; the measure of cDR-RS): the Fréchet distance between
  the generated and the real images *of each class*, in a chosen feature space, averaged over
  the classes. It penalises a generator whose class ``y`` looks like another class, which the
  FID of the pooled samples does not see. Called ``intra_fid`` in the Inception space and
  ``intra_fd`` in any other (the convention of :mod:`refine.metrics.keys`).
- **Label accuracy**: the share of samples generated for class ``y`` that a separately trained
  classifier assigns to ``y``.
- **Class-histogram KL**: ``KL(p_ref || p_samples)`` between class frequencies (with a
  pseudo-count of 0.5 per class so that an empty class gives a finite value), for generators
  whose samples carry no label and whose classes are read off a classifier.

Per-class Fréchet distances are biased upwards at small sample sizes (as FID is), so compare
methods at the same number of samples per class.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from ..errors import ShapeError
from .fid import fid_from_features

__all__ = ["class_histogram", "histogram_kl", "intra_frechet", "intra_scores", "label_accuracy"]


def _labels(y, n: int, what: str) -> torch.Tensor:
    y = torch.as_tensor(y).long().flatten()
    if y.numel() != n:
        raise ShapeError(f"{what} has {y.numel()} labels for {n} samples; give one class index per sample")
    return y


def intra_frechet(
    features: torch.Tensor,
    y,
    real_features: torch.Tensor,
    real_y,
    *,
    classes: Sequence[int] | None = None,
    min_samples: int = 2,
) -> dict:
    """``{"mean": float, "per_class": {c: fd}}``: the Fréchet distance per class and its mean over ``classes``
    (default: the classes present in ``y``). A class with fewer than ``min_samples`` generated or real
    samples is skipped and listed under ``"skipped"``."""
    y = _labels(y, len(features), "the samples")
    real_y = _labels(real_y, len(real_features), "the real images")
    classes = sorted(set(y.tolist())) if classes is None else list(classes)
    per, skipped = {}, []
    for c in classes:
        f, r = features[y == c], real_features[real_y == c]
        if len(f) < min_samples or len(r) < min_samples:
            skipped.append(int(c))
            continue
        per[int(c)] = float(fid_from_features(f.double().numpy(), r.double().numpy()))
    mean = float(np.mean(list(per.values()))) if per else math.nan
    return {"mean": mean, "per_class": per, "skipped": skipped}


def label_accuracy(logits: torch.Tensor, y) -> dict:
    """``{"accuracy": float, "per_class": {c: float}}``: how often the classifier's argmax equals the intended class."""
    y = _labels(y, len(logits), "the samples")
    hit = (logits.argmax(1).cpu() == y).double()
    return {
        "accuracy": float(hit.mean()),
        "per_class": {int(c): float(hit[y == c].mean()) for c in sorted(set(y.tolist()))},
    }


def class_histogram(labels, num_classes: int) -> np.ndarray:
    """Class frequencies (summing to 1) of integer ``labels``."""
    counts = np.bincount(np.asarray(torch.as_tensor(labels).long().flatten()), minlength=num_classes)[:num_classes]
    return counts / max(counts.sum(), 1)


def histogram_kl(p_ref: np.ndarray, counts_or_p: np.ndarray, n: int | None = None) -> float:
    """``KL(p_ref || q)`` with ``q`` smoothed by 0.5 per class (``n`` the sample count behind ``q``; None: unsmoothed)."""
    p = np.asarray(p_ref, dtype=float)
    q = np.asarray(counts_or_p, dtype=float)
    if n is not None:
        q = (q * n + 0.5) / (n + 0.5 * len(q))
    mask = p > 0
    return float(np.sum(p[mask] * np.log(p[mask] / q[mask])))


def intra_scores(
    features: torch.Tensor,
    logits: torch.Tensor | None,
    y,
    real_features: torch.Tensor,
    real_y,
    *,
    inception: bool = False,
    classes: Sequence[int] | None = None,
) -> dict:
    """Intra-FID (``intra_fid``, Inception space) or intra-FD (``intra_fd``), label accuracy when ``logits``
    are given, and a per-class table ``[{class, n, fd, accuracy}]``, for samples of classes ``y``."""
    key = "intra_fid" if inception else "intra_fd"
    fd = intra_frechet(features, y, real_features, real_y, classes=classes)
    y = _labels(y, len(features), "the samples")
    out: dict = {key: fd["mean"]}
    acc = label_accuracy(logits, y) if logits is not None else None
    if acc is not None:
        out["label_accuracy"] = acc["accuracy"]
    rows = []
    for c in sorted(set(y.tolist()) if classes is None else classes):
        row = {"class": int(c), "n": int((y == c).sum()), "fd": fd["per_class"].get(int(c))}
        if acc is not None:
            row["accuracy"] = acc["per_class"].get(int(c))
        rows.append(row)
    out["per_class"] = rows
    if fd["skipped"]:
        out["skipped_classes"] = fd["skipped"]
    return out
