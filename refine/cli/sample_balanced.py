"""``refine sample --balance-classifier FILE``: refined samples held at a class histogram by a classifier."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch

from ..balanced import sample_balanced
from ..data.images import load_images
from ..errors import ConfigError, DataError
from ..eval.classifier import load_classifier
from ..io import file_sha256
from ..outputs import NpzWriter, RunFolder
from .sample_conditional import _append_labels

#: ``--balance-probs`` values besides a comma-separated list of probabilities.
BALANCE_PROBS = ("uniform", "data")


def check_balance_request(
    *,
    classifier: Path | None,
    probs: str | None,
    conditional: bool,
    fmt: str,
    distributed: bool,
    feature_stats: str | None,
    config: Path | None,
) -> None:
    """One-line refusals, before anything is loaded, of what balanced sampling does not take."""
    if classifier is None:
        if probs is not None:
            raise ConfigError("--balance-probs applies with --balance-classifier FILE")
        return
    if not Path(classifier).is_file():
        raise ConfigError(f"--balance-classifier {classifier}: no such file (write one with refine train-classifier)")
    if conditional:
        raise ConfigError(
            "--balance-classifier stratifies an unconditional generator; a conditional checkpoint takes --classes"
        )
    for given, what in (
        (fmt != "npz", f"--format {fmt}"),
        (distributed, "--distributed/--resume"),
        (feature_stats is not None, "--feature-stats"),
        (config is not None, "--config"),
    ):
        if given:
            raise ConfigError(f"{what} is not available with --balance-classifier yet; drop one of them")
    if probs is not None and probs not in BALANCE_PROBS:
        parse_probs(probs)


def parse_probs(text: str) -> list[float]:
    try:
        p = [float(v) for v in text.split(",")]
    except ValueError:
        raise ConfigError(
            f"--balance-probs {text!r}: expected uniform, data or comma-separated class probabilities"
        ) from None
    if not p or any(not v >= 0 for v in p) or sum(p) <= 0:
        raise ConfigError(f"--balance-probs {text!r}: the probabilities must be non-negative and not all zero")
    return p


def load_balance(path: Path, probs: str | None, dev) -> tuple[torch.nn.Module, list[float] | None, dict]:
    """The classifier, the class probabilities (None: uniform) and the run record's entry."""
    net, info = load_classifier(path, device=dev)
    k = info.get("num_classes")
    probs = probs or "uniform"
    if probs == "uniform":
        p = None
    elif probs == "data":
        spec = info.get("dataset")
        if not spec:
            raise DataError(f"{path} records no dataset; pass --balance-probs as class probabilities or uniform")
        labels = load_images(spec, split="train").labels
        if labels is None:
            raise DataError(f"{spec} has no class labels for --balance-probs data")
        counts = torch.bincount(labels, minlength=k or 0)
        p = (counts.double() / counts.sum()).tolist()
    else:
        p = parse_probs(probs)
    if p is not None and k is not None and len(p) != k:
        raise ConfigError(f"--balance-probs has {len(p)} classes but the classifier {path} has {k}")
    record = {
        "classifier": str(path),
        "sha256": file_sha256(path),
        "probs": probs,
        "classifier_dataset": info.get("dataset"),
        "classifier_val_acc": info.get("val_acc"),
    }
    return net, p, record


def as_classifier_input(net: torch.nn.Module, output_range: str):
    """``x -> logits`` for samples in the generator's range (refine's classifiers take images in [-1, 1])."""
    if output_range == "[-1,1]":
        return net
    if output_range == "[0,1]":
        return lambda x: net(x * 2 - 1)
    raise ConfigError(
        f"--balance-classifier takes image samples with a declared value range; this generator's is {output_range!r}"
    )


def sample_balanced_run(sampler, target, n: int, *, seed: int, classifier, probs, run: RunFolder, progress: bool):
    """Draw the balanced samples and write ``samples.npz`` (x, z where kept, y) into the run's staging folder."""
    t0 = time.perf_counter()
    gen = target.generator
    result = sample_balanced(
        sampler,
        target,
        n,
        classifier=as_classifier_input(classifier, gen.output_range),
        class_probs=probs,
        seed=seed,
        progress=progress,
    )
    path = run.path("samples.npz")
    with NpzWriter(path, n) as writer:
        arrays = {"x": result.x.detach().float().cpu().numpy()}
        if result.z is not None:
            arrays["z"] = result.z.detach().float().cpu().numpy()
        writer.write(**arrays)
    quotas = result.info["balanced"]["quotas"]
    _append_labels(path, [(c, m) for c, m in enumerate(quotas) if m])
    result.info = dataclasses.replace(result.info, wall_time_s=time.perf_counter() - t0)
    return result
