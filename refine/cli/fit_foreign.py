"""Fine-tuning a foreign discriminator in ``refine fit-ratio --disc``: a trainable copy of it, seen
through its logit, and the files a discriminator of the user's own architecture is saved as."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
import typer
from safetensors.torch import save as st_save

from ..errors import ConfigError
from ..fs import atomic_write, write_json
from ..io.arch import parse_kwargs
from ..nets import ARCHS, arch_config
from .inputs import Foreign


class _AsLogit(torch.nn.Module):
    """A discriminator seen through its logit, for training with the logistic loss: a probability
    output ``p`` becomes ``log p - log(1 - p)``; a logit or a critic value is used as it is."""

    def __init__(self, net: torch.nn.Module, output: str) -> None:
        super().__init__()
        self.net, self.output = net, output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.net(x)
        if self.output == "prob":
            y = torch.logit(y.clamp(1e-7, 1 - 1e-7))
        return y


def _refine_arch(spec: str | None) -> bool:
    return spec is not None and spec in ARCHS


def _foreign_copy(ratio, foreign: Foreign) -> tuple[torch.nn.Module, dict | None, str]:
    """A trainable copy of the foreign discriminator, its refine architecture config (None for a
    factory of the user's own), and its declared output."""
    net = ratio.net
    if not isinstance(net, torch.nn.Module) or not any(p.is_floating_point() for p in net.parameters()):
        raise ConfigError(
            f"--disc {foreign.disc} loaded as a {type(net).__name__} without trainable parameters; fine-tuning needs "
            "its weights as a state_dict or safetensors file with --disc-arch"
        )
    arch = None
    if _refine_arch(foreign.disc_arch):
        arch = arch_config(foreign.disc_arch, **parse_kwargs(foreign.disc_arch_kwargs, "--disc-arch-kwargs"))
    return copy.deepcopy(net), arch, ratio.output


def _save_user_arch(out: Path, ratio, meta: dict, foreign: Foreign) -> None:
    """Weights of a user-architecture discriminator as a safetensors state_dict (the safe route for
    networks refine cannot rebuild from a file), the record beside it (``OUT.json``), and the
    ``refine sample`` flags that use them."""
    temperature = 1.0
    if ratio.calibration is not None:  # log r = a * logit + b: every sampler ignores b, so T = 1 / a
        a = float(ratio.calibration.to_config()["a"])
        if not a > 0:
            raise ConfigError(
                f"the logistic calibration has slope {a:.3g}: the fine-tuned discriminator ranks generated "
                "samples above real ones; train longer or check --disc-output"
            )
        temperature = 1.0 / a
    meta = {
        **meta,
        "disc_arch": foreign.disc_arch,
        "disc_arch_kwargs": foreign.disc_arch_kwargs,
        "output": ratio.output,
    }
    meta["use_with"] = (
        f"--disc {out} --disc-arch {foreign.disc_arch}"
        + (f" --disc-arch-kwargs '{foreign.disc_arch_kwargs}'" if foreign.disc_arch_kwargs else "")
        + f" --disc-output {ratio.output} --disc-temperature {temperature:.6g}"
    )
    state = {k: v.detach().contiguous().cpu() for k, v in ratio.net.state_dict().items()}
    with atomic_write(out) as f:
        f.write(st_save(state))
    write_json(meta, out.with_name(out.name + ".json"))
    typer.echo(f"use it with: refine sample {meta['use_with']}", err=True)
