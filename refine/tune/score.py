"""How ``refine tune`` scores a trial's samples: one number to rank by, plus the figures behind it.

A scorer maps samples to a dict holding ``objective`` (higher is better) and the
metrics it was made from; ``split`` names the held-out data it scores against
("validation" while searching, "test" for the final table), so that the test data
never steers the search.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch

from ..data.toy2d import get_mixture
from ..metrics.fid import feature_statistics, frechet_distance
from ..metrics.prdc import COVERAGE, RECALL, knn_radii
from ..metrics.toy2d import mode_metrics

__all__ = ["Scorer", "ModeScorer", "ImageScorer", "recall_coverage"]

SPLITS = ("validation", "test")


class Scorer(Protocol):
    name: str

    def __call__(self, x: torch.Tensor, split: str) -> dict: ...

    def describe(self) -> dict: ...


class ModeScorer:
    """2-D mixtures: ``objective = HQ fraction x exp(-KL(mode histogram || uniform))``.

    The product is 1 only when every sample is high quality and the modes are hit
    equally often; it falls with low-quality samples, with unbalanced modes and (through
    the KL) with lost ones, so neither a method that drops modes nor one that keeps bad
    samples ranks first. The mode metrics need no real samples (the mixture is known),
    so the validation and test splits differ in the latents and seeds the trials draw,
    not in the data.
    """

    name = "modes"

    def __init__(self, mixture: str, *, threshold: float = 4.0) -> None:
        self.mixture_name = mixture
        self.mixture = get_mixture(mixture)
        self.threshold = float(threshold)

    def __call__(self, x: torch.Tensor, split: str) -> dict:
        m = mode_metrics(x, self.mixture, threshold=self.threshold)
        kl = m["kl_uniform"]
        objective = m["hq_fraction"] * math.exp(-kl) if math.isfinite(kl) else 0.0
        return {"objective": objective, "hq_fraction": m["hq_fraction"], "modes": m["modes"], "kl_uniform": kl}

    def describe(self) -> dict:
        return {
            "scorer": self.name,
            "mixture": self.mixture_name,
            "threshold": self.threshold,
            "objective": "hq_fraction * exp(-kl_uniform)",
        }

    #: columns of the tables, in order
    columns = ("hq_fraction", "modes", "kl_uniform")


def recall_coverage(real: torch.Tensor, real_radii: torch.Tensor, fake: torch.Tensor, *, k: int = 3) -> dict:
    """Recall and coverage (:func:`refine.metrics.prdc.prdc`'s) with the real k-NN radii given.

    The real radii cost a ``(N_real, N_real)`` distance matrix; a tune scores dozens of
    trials against the same real features, so :class:`ImageScorer` computes them once per
    split and each trial pays only for ``(N_real, N_fake)`` distances.
    """
    r = real.to(torch.float64)
    f = fake.to(device=r.device, dtype=torch.float64)
    fake_r = knn_radii(f, k)
    recall = torch.zeros(len(r), dtype=torch.bool, device=r.device)
    covered = torch.zeros(len(r), dtype=torch.bool, device=r.device)
    rows = max(1, (1 << 24) // max(len(f), 1))
    for a in range(0, len(r), rows):
        d = torch.cdist(r[a : a + rows], f)
        recall[a : a + rows] = (d <= fake_r[None, :]).any(dim=1)
        covered[a : a + rows] = (d <= real_radii[a : a + rows, None].to(d)).any(dim=1)
    return {RECALL: float(recall.double().mean()), COVERAGE: float(covered.double().mean())}


class ImageScorer:
    """Images: ``objective = -FID`` in a chosen feature space, with recall and coverage beside it.

    The validation reference is a random part of the dataset's *training* split (``n_val``
    images); the test reference is its test split, which the search never sees. Choose a
    feature space that is not the ratio's own (e.g. a classifier trained on the dataset,
    or Inception), or the tune rewards fooling the ratio's features.
    """

    name = "fid"
    columns = ("fid", "recall", "coverage")

    def __init__(
        self,
        space,
        data: str,
        *,
        image_shape,
        output_range: str,
        n_val: int = 10000,
        n_test: int | None = None,
        k: int = 3,
        progress: bool = False,
    ) -> None:
        from ..eval import real_reference

        self.space, self.data, self.output_range, self.k = space, data, output_range, int(k)
        self.columns = (
            space.keys.fd,
            "recall",
            "coverage",
        )  # fid in the Inception space, fd in any other (refine.metrics.keys)
        self.refs = {
            "validation": real_reference(
                space,
                data,
                image_shape=image_shape,
                split="train",
                n_real=n_val,
                n_prdc=min(n_val, 10000),
                progress=progress,
                grid=0,
            ),
            "test": real_reference(
                space,
                data,
                image_shape=image_shape,
                split="test",
                n_real=n_test,
                n_prdc=min(n_test or 10000, 10000),
                progress=progress,
                grid=0,
            ),
        }
        self._real_radii: dict[str, torch.Tensor] = {}

    def _radii(self, split: str) -> torch.Tensor:
        """The k-NN radii of the split's real features, computed once per split (not once per trial)."""
        if split not in self._real_radii:
            self._real_radii[split] = knn_radii(self.refs[split].features, self.k)
        return self._real_radii[split]

    def __call__(self, x: torch.Tensor, split: str) -> dict:
        from ..eval import to_uint8

        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        ref = self.refs[split]
        feats, _ = self.space.extract(to_uint8(x, self.output_range))
        fd = frechet_distance(ref.mu, ref.sigma, *feature_statistics(feats))
        rc = recall_coverage(ref.features, self._radii(split), feats, k=self.k)
        return {"objective": -float(fd), self.space.keys.fd: float(fd), **rc}

    def describe(self) -> dict:
        return {
            "scorer": self.name,
            "features": self.space.network,
            "data": self.data,
            "k": self.k,
            "validation": {"split": "train", "n": self.refs["validation"].n},
            "test": {"split": "test", "n": self.refs["test"].n},
            "objective": f"-{self.space.keys.fd}",
        }
