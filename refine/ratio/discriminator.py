"""Discriminators and critics as density ratios.

For a discriminator trained with the standard GAN loss, the optimal ``D*(x) =
p_data / (p_data + p_G)`` and its logit is exactly ``log r(x)``. So:

- ``output="logit"``: the network returns the pre-sigmoid logit; ``log r = logit``.
- ``output="prob"``: the network returns ``D(x)`` in (0, 1); ``log r = log D - log(1 - D)``
  (clamped away from 0 and 1; prefer the logit when you have it).
- ``output="critic"``: a WGAN critic value. It is *not* a log density ratio. refine
  uses it as a negative energy with a scale: ``log r(x) = critic(x) / temperature``,
  i.e. the refined density is ``p_G(x) exp(critic(x) / T)``. You choose ``T``; smaller
  values trust the critic more. (DDLS and DCD use the critic this way.)

``temperature`` applies to all three outputs (``log r / T``); the default 1 keeps the
logit as the ratio. A fitted calibration (:mod:`refine.ratio.calibration`) maps the
logit before the temperature.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..errors import ConfigError
from ..validate import as_float
from .base import check_log_ratio
from .calibration import LOGISTIC_LIMIT

__all__ = ["DiscriminatorRatio", "DISCRIMINATOR_OUTPUTS"]

DISCRIMINATOR_OUTPUTS = ("logit", "prob", "critic")


#: 1 / T scales the score as a logistic calibration's slope does, and is bounded alike
MIN_TEMPERATURE = 1 / LOGISTIC_LIMIT


class DiscriminatorRatio:
    """A discriminator network read as ``log r(x)``. See the module docs for ``output``."""

    def __init__(
        self,
        net: Callable[[torch.Tensor], torch.Tensor],
        output: str = "logit",
        *,
        temperature: float = 1.0,
        calibration=None,
        differentiable: bool | None = None,
    ) -> None:
        if output not in DISCRIMINATOR_OUTPUTS:
            raise ConfigError(f"unknown discriminator output {output!r}; valid: {', '.join(DISCRIMINATOR_OUTPUTS)}")
        temperature = as_float(temperature, "temperature", minimum=MIN_TEMPERATURE)
        self.net = net
        self.output = output
        self.temperature = temperature
        self.calibration = calibration
        base = True if differentiable is None else bool(differentiable)
        self.differentiable = base and (calibration is None or calibration.differentiable)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """The network's raw output as ``(B,)``."""
        return check_log_ratio(self.net(x), x.shape[0], "discriminator")

    def logit(self, x: torch.Tensor) -> torch.Tensor:
        """The uncalibrated log-ratio estimate (logit, log-odds of a probability, or the critic value)."""
        s = self.score(x)
        if self.output == "prob":
            eps = torch.finfo(s.dtype).eps
            s = torch.logit(s.clamp(eps, 1 - eps))
        return s

    def log_ratio(self, x: torch.Tensor) -> torch.Tensor:
        s = self.logit(x)
        if self.calibration is not None:
            s = self.calibration(s)
        return s / self.temperature if self.temperature != 1.0 else s

    def with_calibration(self, calibration) -> DiscriminatorRatio:
        return DiscriminatorRatio(self.net, self.output, temperature=self.temperature, calibration=calibration)

    def __repr__(self) -> str:
        cal = f", calibration={self.calibration!r}" if self.calibration is not None else ""
        return f"DiscriminatorRatio({type(self.net).__name__}, output={self.output!r}, temperature={self.temperature}{cal})"
