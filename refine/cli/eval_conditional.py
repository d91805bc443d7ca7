"""``refine eval --ckpt CG``: a class-conditional generator and its samplers, scored class by class.

The rows of :func:`refine.eval.evaluate_conditional_methods` (intra-FID/FD, label accuracy, the
pooled distance, per-class counts and cost), printed as a table with the per-class table under
it, and with ``--out``: ``eval.md``, ``eval.json`` (rows with their per-class tables, the network,
the real reference, the checkpoint's and ratio's hashes) and ``eval.png`` (one row per class:
the real images, then each method).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import typer

from ..conditional import ConditionalGenerator, ConditionalTarget, class_plan, parse_classes
from ..data.images import is_image_spec, load_images
from ..errors import ConfigError, DataError
from ..eval import (
    conditional_report,
    evaluate_conditional_methods,
    labelled_reference,
    load_image_samples,
    save_image_panels,
    score_labelled,
)
from ..eval.conditional import PICTURE_PER_CLASS
from ..fs import atomic_write, read_npz
from ..outputs import RunFolder
from ..samplers import get_sampler
from .common import command_line, timestamp, versions
from .inputs import load_inputs
from .sample_conditional import _conditional_ratio_file

__all__ = ["eval_conditional", "eval_conditional_samples"]


def eval_conditional(
    ckpt: Path,
    ratio: Path | None,
    per: list[tuple[str, dict]],
    *,
    data: str | None,
    classes: str | None,
    n: int,
    seed: int,
    dev,
    out: Path | None,
    json_out: bool,
    progress: bool,
    img,
    foreign,
) -> None:
    """The whole ``refine eval`` of a class-conditional checkpoint (``img``: the command's image options)."""
    img.validate()
    if foreign is not None and (foreign.generator_flags() or foreign.disc is not None):
        raise ConfigError(
            "foreign-network options apply to unconditional generators; a class-conditional refine checkpoint declares its own networks"
        )
    _refuse_unconditional_metrics(img)
    if img.samples_range != "auto":
        raise ConfigError("--samples-range is for --samples files; a generator declares its own output range")
    inputs = load_inputs(ckpt, None, dev, need_ratio=any(m != "none" for m, _ in per) and ratio is None)
    gen = inputs.gan.generator
    if not isinstance(gen, ConditionalGenerator):  # pragma: no cover - routed here by is_conditional_checkpoint
        raise ConfigError(f"{ckpt} is not a class-conditional checkpoint")
    plan = class_plan(n, parse_classes("balanced" if classes is None else classes, gen.num_classes), gen.num_classes)
    for m, o in per:
        sampler = get_sampler(m, **o)
        if sampler.real_rows(n) > 0:
            raise ConfigError(
                f"method {m!r} starts from (or fine-tunes on) real images; refine eval of a class-conditional checkpoint does not take it yet"
            )
    data = data or inputs.dataset
    if data is None or not is_image_spec(data):
        raise ConfigError(
            f"a class-conditional checkpoint is scored against the labelled image dataset it was trained on: pass --data NAME:ROOT (got {data!r})"
        )
    cond_ratio = inputs.ratio if ratio is None else _conditional_ratio_file(ratio, gen, dev, inputs.provenance)
    target = ConditionalTarget(gen, cond_ratio)
    x1 = gen.at(plan[0][0]).sample(1)[1]
    if x1.dim() != 4 or gen.output_range not in ("[-1,1]", "[0,1]"):
        raise ConfigError(
            f"refine eval scores images with a declared value range; this generator makes {tuple(x1.shape[1:])} in {gen.output_range!r}"
        )
    space = img.space(dev)
    reference = labelled_reference(
        space,
        data,
        image_shape=tuple(x1.shape[1:]),
        split=img.split,
        n_real=img.n_real,
        batch_size=img.batch_size,
        progress=progress,
        cache=img.statistics_cache(),
    )
    rows = evaluate_conditional_methods(
        target,
        per,
        n,
        seed=seed,
        space=space,
        reference=reference,
        output_range=gen.output_range,
        classes=[c for c, _ in plan],
        batch_size=img.batch_size,
        progress=progress,
    )
    record = {
        "command": command_line(),
        "data": data,
        "n": n,
        "seed": seed,
        "classes": [c for c, _ in plan],
        "inputs": inputs.provenance,
    }
    _outputs(rows, space, reference, out, json_out, img, record, [c for c, _ in plan])


def eval_conditional_samples(
    samples: list[Path], *, data: str | None, classes: str, seed: int, dev, out, json_out: bool, progress: bool, img
) -> None:
    """``refine eval --samples FILE.npz --classes ...``: samples files with labels ``y`` (as ``refine sample``
    writes them for a class-conditional checkpoint), scored class by class like a conditional checkpoint."""
    img.validate()
    _refuse_unconditional_metrics(img)
    if data is None or not is_image_spec(data):
        raise ConfigError(
            f"labelled samples are scored class by class against a labelled image dataset: pass --data NAME:ROOT (got {data!r})"
        )
    sets = []
    for p in samples:
        x8, y, info = _labelled_samples(Path(p), img.samples_range, progress)
        if sets and tuple(x8.shape[1:]) != tuple(sets[0][1].shape[1:]):
            raise DataError(
                f"samples {p} are images {tuple(x8.shape[1:])}, unlike {sets[0][0]}; compare sets of one image shape"
            )
        sets.append((p, x8, y, info))
    k = max(int(y.max()) + 1 for _, _, y, _ in sets if len(y))
    wanted = (
        None if classes.strip().lower() in ("all", "balanced") else set(parse_classes(classes, k) if classes else [])
    )
    space = img.space(dev)
    reference = labelled_reference(
        space, data, image_shape=tuple(sets[0][1].shape[1:]), split=img.split, n_real=img.n_real,
        batch_size=img.batch_size, progress=progress, cache=img.statistics_cache(),
    )  # fmt: skip
    rows, shown = [], set()
    for p, x8, y, info in sets:
        keep = torch.ones(len(y), dtype=torch.bool) if wanted is None else torch.isin(y, torch.tensor(sorted(wanted)))
        if not bool(keep.any()):
            raise DataError(f"{p} holds no samples of the classes asked for ({classes})")
        scores = score_labelled(
            x8[keep], y[keep], space, reference, num_classes=int(reference.labels.max()) + 1,
            batch_size=img.batch_size, progress=progress, desc=f"{Path(p).name} features",
        )  # fmt: skip
        shown |= {int(c) for c in scores["counts"]}
        rows.append(
            {
                "method": str(p),
                "n": int(keep.sum()),
                **scores,
                "value_range": info["value_range"],
                "features": space.network,
            }
        )
    record = {
        "command": command_line(),
        "data": data,
        "seed": seed,
        "samples": [i for *_, i in sets],
        "classes": sorted(shown),
    }
    _outputs(rows, space, reference, out, json_out, img, record, sorted(shown))


def _labelled_samples(p: Path, value_range: str, progress: bool) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """8-bit images, their class indices and how they were read: an ``.npz`` with ``y`` beside the images,
    or a folder with one subfolder per class named by its index (``refine sample --format png``)."""
    if p.is_dir():
        folder = load_images(f"folder:{p}", split="train", progress=progress)
        names = folder.classes or []
        if folder.labels is None or not names or not all(c.isdigit() for c in names):
            raise ConfigError(
                f"--classes scores samples by their labels; {p} needs one subfolder per class named by the class index "
                "(as refine sample --format png writes them), or pass the .npz"
            )
        index = torch.tensor([int(c) for c in names])
        return (
            folder.images,
            index[folder.labels.long()],
            {"path": str(p), "kind": "folder", "n": len(folder), "value_range": "[0,255]"},
        )
    x8, info = load_image_samples(p, value_range=value_range, progress=progress)
    y = read_npz(p, "samples file", keys=("y",))["y"]
    if y.ndim != 1 or len(y) != len(x8) or y.dtype.kind not in "iu" or (len(y) and y.min() < 0):
        raise DataError(
            f"{p} holds no labels y matching its {len(x8)} images (non-negative integers, one per image); "
            "refine sample of a class-conditional checkpoint writes them"
        )
    return x8, torch.from_numpy(np.asarray(y, dtype=np.int64)), info


def _refuse_unconditional_metrics(img) -> None:
    unsupported = [
        flag
        for flag, given in (("--ref-stats", img.ref_stats is not None), ("--metrics", img.metrics is not None))
        if given
    ]
    if unsupported:
        raise ConfigError(
            f"{', '.join(unsupported)}: class-conditional samples and checkpoints are scored by intra-class distances against labelled images; drop it"
        )


def _outputs(rows, space, reference, out, json_out: bool, img, record: dict, classes: list[int]) -> None:
    """The table (or the rows as JSON) on stdout; with ``out``: eval.md, eval.json and eval.png, staged together."""
    report = conditional_report(rows, space, reference)
    clean = [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]
    typer.echo(json.dumps(clean, indent=2) if json_out else report)
    if out is None:
        return
    panels = {f"real ({reference.dataset.split(':', 1)[0]} {reference.split})": _rows_of(reference, classes)}
    subs = {}
    for r in rows:
        if "error" in r:
            continue
        panels[r["method"]] = r["_x"]
        intra = r.get("intra_fid", r.get("intra_fd"))
        subs[r["method"]] = f"intra {intra:.4g}" + (
            f", accuracy {r['label_accuracy']:.2f}" if r.get("label_accuracy") is not None else ""
        )
    with RunFolder(out, record="eval.json") as run:  # staged, put in place together, eval.json last
        save_image_panels(run.path("eval.png"), panels, subtitles=subs, max_images=10_000, nrow=PICTURE_PER_CLASS)
        with atomic_write(run.path("eval.md"), "w") as f:
            f.write(report)
        run.commit(
            {
                **record,
                "features": space.describe(),
                "reference": reference.describe(),
                **img.record(),
                "rows": clean,
                "versions": versions(),
                "time": timestamp(),
            }
        )


def _rows_of(reference, classes: list[int]):
    grid, labels = reference.grid, []
    for c in range(int(reference.labels.max()) + 1):
        labels += [c] * min(PICTURE_PER_CLASS, int((reference.labels == c).sum()))
    labels = torch.tensor(labels)
    return torch.cat([grid[labels == c] for c in classes])
