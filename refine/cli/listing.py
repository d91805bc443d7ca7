"""``refine list``: what is available, with options."""

from __future__ import annotations

import json

import typer

from ..data.toy2d import MIXTURES
from ..io import ratio_kinds
from ..nets import list_archs
from ..samplers import SAMPLERS, sampler_options
from ..train.registry import METHODS
from .app import app


def catalogue() -> dict:
    return {
        "samplers": {
            name: {"summary": cls.summary, "needs_gradients": cls.needs_gradients, "options": sampler_options(name)}
            for name, cls in SAMPLERS.items()
        },
        "training_methods": {
            name: (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else "" for name, cls in METHODS.items()
        },
        "ratio_kinds": ratio_kinds(),
        "datasets": {name: f"{m.n_modes} Gaussians, std {m.std:.4g}" for name, m in MIXTURES.items()},
        "architectures": list_archs(),
    }


@app.command("list")
def list_(as_json: bool = typer.Option(False, "--json", help="print the catalogue as JSON (for scripts)")) -> None:
    """Show samplers (with their options), training methods, ratio kinds, datasets and architectures."""
    cat = catalogue()
    if as_json:
        typer.echo(json.dumps(cat, indent=2, default=str))
        return
    typer.echo("Samplers (refine sample --method NAME -o key=value):")
    for name, s in cat["samplers"].items():
        grad = " [gradients]" if s["needs_gradients"] else ""
        typer.echo(f"  {name:8s} {s['summary']}{grad}")
        for o in s["options"]:
            typer.echo(f"      {o['name']}={o['default']!s:<10} ({o['type']}) {o['help']}")
    typer.echo("\nTraining methods (refine train --method NAME):")
    for name, doc in cat["training_methods"].items():
        typer.echo(f"  {name:8s} {doc}")
    typer.echo("\nRatio kinds (refine fit-ratio --kind NAME): " + ", ".join(cat["ratio_kinds"]))
    typer.echo("\nDatasets (--data NAME):")
    for name, d in cat["datasets"].items():
        typer.echo(f"  {name:14s} {d}")
    typer.echo("\nArchitectures: " + ", ".join(cat["architectures"]))


@app.command("list-json", hidden=True)
def list_json() -> None:
    """The old spelling of ``refine list --json``."""
    typer.echo(json.dumps(catalogue(), indent=2, default=str))
