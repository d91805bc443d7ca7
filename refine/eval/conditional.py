"""Evaluation of class-conditional generators: intra-FID, label accuracy, the per-class table, one picture row per class.

:func:`labelled_reference` holds the real images' features *with their labels* in a feature space
(the per-class Fréchet distances need each class's own statistics); :func:`evaluate_conditional_methods`
samples every method for the requested classes (exact counts per class, each class on its own
seed, :func:`refine.conditional.sample_conditional`) and scores each against the real images of the
same class: ``intra_fid`` (Inception space) or ``intra_fd`` (any other), the pooled Fréchet
distance against the real images of the classes asked for (``fid``/``fd``), label accuracy when
the network's classes are the generator's, a per-class table and the cost.
:func:`conditional_report` is the Markdown caption and tables.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..conditional import ConditionalTarget, sample_conditional
from ..data.images import convert_images, load_images, parse_data_spec
from ..errors import BudgetExceededError, ConfigError, DataError
from ..metrics.fid import StatisticsCache, fid_from_features
from ..metrics.intra import intra_scores
from ..samplers import get_sampler
from .compare import markdown_table, table_columns
from .images import to_uint8
from .reference import load_cached_features, save_cached_features
from .spaces import FeatureSpace

__all__ = [
    "LabelledReference",
    "conditional_report",
    "evaluate_conditional_methods",
    "labelled_reference",
    "score_labelled",
]

#: Samples per class kept for the picture (one row per class).
PICTURE_PER_CLASS = 8
#: Seed of the random subset of real images when ``n_real`` is given.
_SUBSET_SEED = 0


@dataclass
class LabelledReference:
    """Real features ``(N, D)`` and labels ``(N,)`` of one split in one feature space, with a few images per class."""

    features: torch.Tensor
    labels: torch.Tensor
    dataset: str
    split: str
    network: str
    image_shape: tuple[int, int, int]
    grid: torch.Tensor | None = None

    def describe(self) -> dict:
        counts = torch.bincount(self.labels)
        return {
            "dataset": self.dataset,
            "split": self.split,
            "n": int(len(self.labels)),
            "per_class": {int(c): int(v) for c, v in enumerate(counts.tolist())},
            "image_shape": list(self.image_shape),
            "network": self.network,
        }


def labelled_reference(
    space: FeatureSpace,
    data: str,
    *,
    image_shape: Sequence[int],
    split: str = "test",
    n_real: int | None = None,
    batch_size: int = 50,
    progress: bool = False,
    cache: StatisticsCache | None = None,
) -> LabelledReference:
    """The labelled real images of ``data``'s ``split`` (all, or a random ``n_real``) at the generator's
    ``image_shape`` ``(C, H, W)``, their features in ``space`` and :data:`PICTURE_PER_CLASS` images per class.

    With ``cache``, the features and labels are kept in ``<root>/labelled_features/``, keyed as the
    real statistics are (dataset and absolute root, split, preprocessing, network and its weights)."""
    spec = parse_data_spec(data)
    c, h, w = (int(v) for v in image_shape)
    if n_real is not None and n_real < 2:
        raise ConfigError(f"the real reference needs at least 2 images, got n_real={n_real}")
    dataset = f"{spec.name}:{spec.root.expanduser().resolve()}"
    prep = {"image_size": h, "channels": c, "pixels": "uint8", "n_real": n_real or "all", "labelled": True}
    key = {"dataset": dataset, "split": split, "preprocessing": prep, "network": space.key}
    path = (
        None
        if cache is None
        else cache.root / "labelled_features" / f"{cache.key(dataset, split, prep, space.key)}.npz"
    )
    real = load_images(
        spec, split=split, limit=n_real, rng=torch.Generator().manual_seed(_SUBSET_SEED), progress=progress
    )
    if real.labels is None:
        raise DataError(
            f"{data} [{split}] has no class labels; a class-conditional generator is scored class by class against labelled images"
        )
    images = convert_images(real.images, image_size=h, channels=c)
    labels = real.labels.long()
    feats = load_cached_features(path, key)[0] if path is not None else None
    if feats is not None and len(feats) != len(labels):
        raise DataError(
            f"cached features {path} hold {len(feats)} images, not {len(labels)}; delete the file to recompute it"
        )
    if feats is None:
        feats, _ = space.extract(
            images, batch_size=batch_size, progress=progress, desc=f"real features ({space.short})"
        )
        if path is not None:
            save_cached_features(path, feats, None, key)
    grid = torch.cat([images[labels == k][:PICTURE_PER_CLASS] for k in range(int(labels.max()) + 1)])
    return LabelledReference(
        features=feats,
        labels=labels,
        dataset=dataset,
        split=split,
        network=space.network,
        image_shape=(c, h, w),
        grid=grid,
    )


def _picture(x8: torch.Tensor, y: torch.Tensor, classes: list[int]) -> torch.Tensor:
    """The first :data:`PICTURE_PER_CLASS` samples of each class, class after class."""
    return torch.cat([x8[y == c][:PICTURE_PER_CLASS] for c in classes])


def score_labelled(
    x8: torch.Tensor,
    y,
    space: FeatureSpace,
    reference: LabelledReference,
    *,
    num_classes: int,
    batch_size: int = 50,
    progress: bool = False,
    desc: str = "sample features",
) -> dict:
    """The scores of 8-bit images ``x8`` labelled ``y``: ``intra_fid``/``intra_fd``, ``label_accuracy``
    (where the network has ``num_classes`` logits), the pooled ``fid``/``fd`` against the real images
    of the same classes, ``counts``, ``per_class`` and, under ``_x``, the picture (a row per class)."""
    if reference.network != space.network:
        raise ConfigError(f"the real reference was computed with {reference.network}, not with {space.network}")
    y = torch.as_tensor(y).long().cpu()
    present = sorted(set(y.tolist()))
    missing = [c for c in present if not bool((reference.labels == c).any())]
    if missing:
        raise DataError(
            f"{reference.dataset} [{reference.split}] has no images of class(es) {missing}; score against a split with every class"
        )
    feats, logits = space.extract(x8, batch_size=batch_size, progress=progress, desc=desc)
    use_logits = logits if logits is not None and logits.shape[1] == num_classes else None
    scores = intra_scores(
        feats,
        use_logits,
        y,
        reference.features,
        reference.labels,
        inception=space.short == "inception",
        classes=present,
    )
    same = torch.isin(reference.labels, torch.tensor(present))
    return {
        **{k: v for k, v in scores.items() if k != "per_class"},
        space.keys.fd: float(fid_from_features(feats.double().numpy(), reference.features[same].double().numpy())),
        "counts": {str(c): int((y == c).sum()) for c in present},
        "per_class": scores["per_class"],
        "_x": _picture(x8, y, present),
    }


def evaluate_conditional_methods(
    target: ConditionalTarget,
    methods: list[tuple[str, dict]],
    n: int,
    *,
    seed: int,
    space: FeatureSpace,
    reference: LabelledReference,
    output_range: str,
    classes="balanced",
    batch_size: int = 50,
    progress: bool = False,
) -> list[dict]:
    """One row per method (``"none"`` is the raw generator) for ``n`` samples over ``classes``.

    Each row has the intra-class distance (``intra_fid``/``intra_fd``), ``label_accuracy`` when
    the network has one logit per class of the generator, the pooled distance (``fid``/``fd``)
    against the real images of the same classes, ``counts`` per class, ``per_class``
    (``{class, n, fd, accuracy}``), the cost (``acceptance_rate`` where the method has one,
    ``g_evals_per_sample``, ``d_evals_per_sample``, ``wall_time_s``) and, under ``_x``, the first
    8-bit samples of each class for the picture. A method that exceeds its proposal budget gets a
    row with its ``error``.
    """
    if reference.network != space.network:
        raise ConfigError(f"the real reference was computed with {reference.network}, not with {space.network}")
    samplers = [(name, get_sampler(name, **opts)) for name, opts in methods]  # every option checked first
    rows = []
    for name, sampler in samplers:
        try:
            res = sample_conditional(sampler, target, n, classes=classes, seed=seed, progress=progress)
        except BudgetExceededError as e:
            rows.append({"method": name, "options": sampler.options(), "error": str(e).splitlines()[0]})
            continue
        x8 = to_uint8(res.x, output_range)
        scores = score_labelled(
            x8,
            res.y,
            space,
            reference,
            num_classes=target.num_classes,
            batch_size=batch_size,
            progress=progress,
            desc=f"{name} features",
        )
        info = res.info
        row = {
            "method": name,
            "options": sampler.options(),
            "n": int(n),
            **scores,
            "g_evals_per_sample": info.get("g_evals_per_sample"),
            "d_evals_per_sample": info.get("d_evals_per_sample"),
            "wall_time_s": info.get("wall_time_s"),
            "features": space.network,
        }
        if info.get("acceptance_rate") is not None:
            row["acceptance_rate"] = info["acceptance_rate"]
        rows.append(row)
    return rows


def conditional_report(rows: list[dict], space: FeatureSpace, reference: LabelledReference) -> str:
    """A caption naming the network and the real reference, the table of methods and the per-class table."""
    keys = space.keys
    intra = "intra_fid" if space.short == "inception" else "intra_fd"
    size = f"{reference.image_shape[1]}x{reference.image_shape[2]}x{reference.image_shape[0]}"
    caption = (
        f"Features: {space.network}.\n{intra}: the mean over classes of the Fréchet distance between the samples and the "
        f"real images of each class; {keys.fd}: the pooled samples against the real images of the same classes; "
        f"against {len(reference.labels)} labelled images of {reference.dataset} [{reference.split}] at {size}. "
        "label_accuracy: how often the network's predicted class is the class asked for (where its classes are the generator's). "
        "Samples rounded to 8 bits.\n\n"
    )
    cols = ["method", intra, "label_accuracy", keys.fd, "acceptance_rate", "g_evals_per_sample", "d_evals_per_sample"]
    table = markdown_table(rows, table_columns(cols + ["wall_time_s"], rows))
    scored = [r for r in rows if "per_class" in r]
    if not scored:
        return caption + table
    lines = [
        "",
        "",
        "Per class (Fréchet distance / label accuracy):",
        "",
        "| class | " + " | ".join(r["method"] for r in scored) + " |",
        "|---" * (1 + len(scored)) + "|",
    ]
    for i, first in enumerate(scored[0]["per_class"]):
        cells = []
        for r in scored:
            pc = r["per_class"][i]
            fd = "–" if pc.get("fd") is None else f"{pc['fd']:.4g}"
            acc = "" if pc.get("accuracy") is None else f" / {pc['accuracy']:.3f}"
            cells.append(fd + acc)
        lines.append(f"| {first['class']} | " + " | ".join(cells) + " |")
    return caption + table + "\n".join(lines) + "\n"
