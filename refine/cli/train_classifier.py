"""``refine train-classifier``: the evaluation classifier of a labelled image dataset (``refine eval --features FILE``)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..eval.classifier import train_classifier_file
from .app import app
from .common import cli_errors, make_rng, resolve_device


@app.command("train-classifier")
@cli_errors
def train_classifier(
    data: str = typer.Option(..., "--data", help="NAME:ROOT, e.g. mnist:/data/mnist"),
    out: Path = typer.Option(..., "--out", help="file to write (format refine.features)"),
    epochs: int = typer.Option(2, "--epochs"),
    batch_size: int = typer.Option(128, "--batch-size"),
    lr: float = typer.Option(1e-3, "--lr"),
    n_train: Optional[int] = typer.Option(
        None, "--n-train", help="random subset of the training split (default: all of it)"
    ),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="resize the images (default: as stored)"),
    channels: Optional[int] = typer.Option(None, "--channels", help="convert to 1 or 3 channels (default: as stored)"),
    widths: str = typer.Option("16,32,64,128", "--widths", help="channels of the four ResNet-34 stages"),
    feature_dim: int = typer.Option(128, "--feature-dim"),
    stem_stride: int = typer.Option(2, "--stem-stride"),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("auto", "--device"),
) -> None:
    """Train a classifier on a labelled image dataset, for refine eval --features FILE.

    Trained on the train split, its accuracy measured on the test split; both are recorded in the file.
    """
    rng = make_rng(seed)
    dev = resolve_device(device)
    meta = train_classifier_file(
        data,
        out,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        n_train=n_train,
        image_size=image_size,
        channels=channels,
        widths=widths,
        feature_dim=feature_dim,
        stem_stride=stem_stride,
        rng=rng,
        seed=seed,
        device=dev,
        progress=True,
    )
    typer.echo(
        f"classifier: test accuracy {meta['val_acc']:.4f} on {meta['n_val']} images, {meta['train_time_s']:.0f}s -> {out}"
    )
