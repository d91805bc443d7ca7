"""``refine data``: image dataset helpers (extract an archive once; show what a NAME:ROOT spec holds)."""

from __future__ import annotations

from pathlib import Path

import typer

from ..data.images import SPLITS, extract_zip, load_images
from ..errors import ConfigError
from .app import app
from .common import cli_errors

data_app = typer.Typer(help="Image dataset helpers: extract an archive once, show what a NAME:ROOT spec holds.")
app.add_typer(data_app, name="data")


@data_app.command("extract")
@cli_errors
def extract(
    archive: Path = typer.Argument(..., help="an image zip, e.g. the CIFAR-10 JPEG archive"),
    dest: Path = typer.Argument(..., help="folder to create (must not exist yet)"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Extract an image zip once, refusing member paths that would land outside DEST."""
    out = extract_zip(archive, dest, progress=progress)
    typer.echo(f"extracted {archive} -> {out}")


@data_app.command("show")
@cli_errors
def show(
    spec: str = typer.Argument(..., help="NAME:ROOT, e.g. mnist:/data/mnist"),
    split: str = typer.Option("train", "--split", help=f"one of {', '.join(SPLITS)}"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Load a dataset spec and print what it holds (images, size, channels, classes)."""
    if split not in SPLITS:
        raise ConfigError(f"unknown --split {split!r}; valid: {', '.join(SPLITS)}")
    typer.echo(load_images(spec, split=split, progress=progress).describe())
