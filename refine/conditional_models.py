"""Class-conditional networks and ratios: how a label reaches ``G(z, y)`` and ``D(x, y)``, the
conditional generator, and the conditional density ratios ``log r(x | y)`` (a function, a
discriminator with one calibration per class, cDR-RS's feature-space ratio).

:mod:`refine.conditional` builds targets on them and samples class by class; it re-exports every
name here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from .errors import ConfigError, ShapeError
from .generator import LatentGenerator, Prior
from .ratio.base import FunctionRatio, check_log_ratio
from .ratio.calibration import calibrate
from .ratio.conditional_feature import fit_cdre_f_sp
from .ratio.discriminator import DISCRIMINATOR_OUTPUTS, DiscriminatorRatio
from .ratio.feature import FeatureRatio, _log_activate
from .validate import as_int

__all__ = [
    "LABELS",
    "MAX_CLASSES",
    "ConditionalDiscriminatorRatio",
    "ConditionalFeatureRatio",
    "ConditionalFunctionRatio",
    "ConditionalGenerator",
    "ConditionalRatio",
    "LabelledNet",
    "calibrate_per_class",
    "encode_labels",
    "fit_conditional_feature_ratio",
]

#: How a conditional network takes its label.
LABELS = ("index", "onehot")

#: Largest number of classes refine accepts (ImageNet-21k has 21,841).
MAX_CLASSES = 100_000


def _check_label(label: str) -> str:
    if not isinstance(label, str) or label not in LABELS:
        raise ConfigError(
            f"unknown label convention {label!r}; valid: {', '.join(LABELS)} "
            "('index': an integer tensor (N,), 'onehot': a float tensor (N, K))"
        )
    return label


def _check_classes(num_classes) -> int:
    return as_int(num_classes, "num_classes", minimum=1, maximum=MAX_CLASSES)


def encode_labels(y: torch.Tensor, num_classes: int, label: str, *, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Class indices ``(N,)`` as the network takes them: ``(N,)`` int64 or ``(N, K)`` one-hot of ``dtype``."""
    y = y.long()
    if label == "index":
        return y
    return nn.functional.one_hot(y, num_classes).to(dtype)


def _net_dtype(net) -> torch.dtype:
    if isinstance(net, nn.Module):
        for p in net.parameters():
            if p.is_floating_point():
                return p.dtype
    return torch.float32


class LabelledNet(nn.Module):
    """A conditional network ``f(u, y)`` with its label fixed: the callable ``u -> f(u, y)``.

    It holds no layers of its own: its parameters, buffers, device and train/eval mode are
    those of the wrapped network, so refine's probes (which restore buffers) and mode
    checks see the user's module.
    """

    def __init__(self, net: Callable, label_value: int, num_classes: int, label: str) -> None:
        super().__init__()
        self.net = net
        self.label_value = int(label_value)
        self.num_classes = int(num_classes)
        self.label = label

    @property
    def training(self) -> bool:  # type: ignore[override]
        return bool(getattr(self.__dict__.get("_modules", {}).get("net"), "training", False))

    @training.setter
    def training(self, value: bool) -> None:  # the mode belongs to the wrapped network
        pass

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        y = torch.full((u.shape[0],), self.label_value, dtype=torch.long, device=u.device)
        return self.net(
            u,
            encode_labels(
                y, self.num_classes, self.label, dtype=u.dtype if u.is_floating_point() else _net_dtype(self.net)
            ),
        )

    def extra_repr(self) -> str:
        return f"y={self.label_value}, label={self.label!r}"


class ConditionalGenerator:
    """A conditional generator ``G(z, y)`` with its latent prior, number of classes and label convention.

    ``at(y)`` is the :class:`LatentGenerator` ``z -> G(z, y)`` that every sampler takes.
    Other arguments are those of :class:`LatentGenerator`.
    """

    def __init__(
        self,
        net: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        num_classes: int,
        *,
        label: str = "index",
        prior: Prior | str | dict = "normal",
        latent_shape: Sequence[int] | int | None = None,
        output_range: str = "none",
        differentiable: bool | None = None,
    ) -> None:
        if not callable(net):
            raise ConfigError(f"generator must be callable (z, y) -> x, got {type(net).__name__}")
        self.net = net
        self.num_classes = _check_classes(num_classes)
        self.label = _check_label(label)
        base = LatentGenerator(
            net, prior, latent_shape=latent_shape, output_range=output_range, differentiable=differentiable
        )
        self.prior, self.output_range, self.differentiable = base.prior, base.output_range, base.differentiable
        self._device = base.device

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return self.prior.shape

    @property
    def device(self) -> torch.device:
        return self._device

    def check_class(self, y: int) -> int:
        return as_int(y, "class", minimum=0, maximum=self.num_classes - 1)

    def at(self, y: int) -> LatentGenerator:
        """The generator of class ``y``: ``z -> G(z, y)``."""
        y = self.check_class(y)
        return LatentGenerator(
            LabelledNet(self.net, y, self.num_classes, self.label),
            self.prior,
            output_range=self.output_range,
            differentiable=self.differentiable,
        )

    def __call__(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``G(z, y)`` for a batch of latents and class indices ``(N,)``."""
        self.prior.check(z)
        if y.shape != (z.shape[0],):
            raise ShapeError(
                f"labels have shape {tuple(y.shape)}; expected ({z.shape[0]},), one class index per latent"
            )
        return self.net(z, encode_labels(y.to(z.device), self.num_classes, self.label, dtype=z.dtype))

    def __repr__(self) -> str:
        return f"ConditionalGenerator({type(self.net).__name__}, num_classes={self.num_classes}, label={self.label!r}, prior={self.prior}, output_range={self.output_range!r})"


class ConditionalRatio:
    """Base class of conditional density ratios ``log r(x | y) = log p_data(x | y) / p_G(x | y)``.

    Subclasses implement ``log_ratio(x, y)`` for class indices ``y`` ``(N,)``; ``at(y)`` is the
    unconditional ratio of one class that the samplers take.
    """

    num_classes: int
    differentiable: bool = True

    def log_ratio(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def at(self, y: int):
        c = as_int(y, "class", minimum=0, maximum=self.num_classes - 1)

        def one_class(x: torch.Tensor) -> torch.Tensor:
            return self.log_ratio(x, torch.full((x.shape[0],), c, dtype=torch.long, device=x.device))

        one_class.__name__ = f"{type(self).__name__}[y={c}]"
        return FunctionRatio(one_class, differentiable=self.differentiable)


class ConditionalFunctionRatio(ConditionalRatio):
    """A function ``(x, y) -> log r(x | y)`` (e.g. a closed form in a test) as a conditional ratio."""

    def __init__(
        self, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], num_classes: int, *, differentiable: bool = True
    ) -> None:
        self.fn, self.num_classes, self.differentiable = fn, _check_classes(num_classes), differentiable

    def log_ratio(self, x, y):
        return check_log_ratio(self.fn(x, y), x.shape[0], "conditional ratio function")

    def __repr__(self) -> str:
        return f"ConditionalFunctionRatio({getattr(self.fn, '__name__', self.fn)!r}, num_classes={self.num_classes})"


class ConditionalDiscriminatorRatio(ConditionalRatio):
    """A conditional discriminator ``D(x, y)`` (projection or concatenation) read as ``log r(x | y)``.

    The conditional optimum of the GAN loss is ``D*(x, y) = p(x | y) / (p(x | y) + p_G(x | y))``,
    so the logit is the conditional log ratio; ``output`` and ``temperature`` mean what they
    mean for :class:`~refine.ratio.discriminator.DiscriminatorRatio`, which ``at(y)`` returns.
    ``calibration`` is None or one calibration per class (:func:`calibrate_per_class`), applied
    to the logit of the samples of that class.
    """

    def __init__(
        self,
        net: Callable,
        num_classes: int,
        output: str = "logit",
        *,
        label: str = "index",
        temperature: float = 1.0,
        calibration: Sequence | None = None,
    ) -> None:
        if output not in DISCRIMINATOR_OUTPUTS:
            raise ConfigError(f"unknown discriminator output {output!r}; valid: {', '.join(DISCRIMINATOR_OUTPUTS)}")
        self.net, self.num_classes, self.output, self.label = (
            net,
            _check_classes(num_classes),
            output,
            _check_label(label),
        )
        self.temperature = DiscriminatorRatio(net, output, temperature=temperature).temperature  # validated there
        if calibration is not None:
            calibration = list(calibration)
            if len(calibration) != self.num_classes:
                raise ConfigError(f"calibration needs one map per class ({self.num_classes}), got {len(calibration)}")
        self.calibration = calibration
        self.differentiable = calibration is None or all(c.differentiable for c in calibration)

    def at(self, y: int) -> DiscriminatorRatio:
        c = as_int(y, "class", minimum=0, maximum=self.num_classes - 1)
        return DiscriminatorRatio(
            LabelledNet(self.net, c, self.num_classes, self.label),
            self.output,
            temperature=self.temperature,
            calibration=None if self.calibration is None else self.calibration[c],
        )

    def log_ratio(self, x, y):
        net = self.net
        s = DiscriminatorRatio(
            lambda u: net(u, encode_labels(y.to(u.device), self.num_classes, self.label, dtype=u.dtype)), self.output
        ).logit(x)
        if self.calibration is not None:
            parts = torch.empty_like(s)
            for c in torch.unique(y).tolist():
                m = (y == c).to(s.device)
                parts[m] = self.calibration[c](s[m])
            s = parts
        return s / self.temperature if self.temperature != 1.0 else s

    def with_calibration(self, calibration: Sequence | None) -> ConditionalDiscriminatorRatio:
        return ConditionalDiscriminatorRatio(
            self.net,
            self.num_classes,
            self.output,
            label=self.label,
            temperature=self.temperature,
            calibration=calibration,
        )

    def __repr__(self) -> str:
        cal = "" if self.calibration is None else f", calibration=per class ({type(self.calibration[0]).__name__})"
        return f"ConditionalDiscriminatorRatio({type(self.net).__name__}, num_classes={self.num_classes}, output={self.output!r}, label={self.label!r}{cal})"


def calibrate_per_class(
    ratio: ConditionalDiscriminatorRatio,
    real: torch.Tensor,
    real_y: torch.Tensor,
    fake: torch.Tensor,
    fake_y: torch.Tensor,
    method: str = "logistic",
    *,
    rng: torch.Generator | None = None,
) -> tuple[ConditionalDiscriminatorRatio, dict]:
    """One calibration of the discriminator's logit per class (MH-GAN's calibration, class by class).

    Each class's map is fitted by :func:`refine.ratio.calibration.calibrate` on that class's
    held-out ``real`` images against ``fake`` ones generated for it; every class needs at least 2
    of each. Returns the calibrated ratio and ``{"method", "per_class": {c: report}}`` with each
    class's statistics before and after on its own held-out half.
    """
    real_y, fake_y = torch.as_tensor(real_y).long().cpu(), torch.as_tensor(fake_y).long().cpu()
    maps, reports = [], {}
    for c in range(ratio.num_classes):
        r, f = real[real_y == c], fake[fake_y == c]
        if len(r) < 2 or len(f) < 2:
            raise ShapeError(
                f"per-class calibration needs at least 2 real and 2 generated images of every class; class {c} has {len(r)} and {len(f)}"
            )
        fitted, reports[c] = calibrate(ratio.with_calibration(None).at(c), r, f, method, rng=rng)
        maps.append(fitted.calibration)
    return ratio.with_calibration(maps), {"method": method, "per_class": reports}


class ConditionalFeatureRatio(ConditionalRatio):
    """cDR-RS's conditional ratio: ``log r(x | y) = log a(head(phi(x), y))`` with one head for all classes.

    ``feature_net`` is DRE-F-SP's frozen feature network (with a ``features(x)`` method),
    ``head`` a :class:`refine.ratio.conditional_feature.ConditionalRatioHead` (``head(f, y)``),
    ``activation`` and ``image_size`` mean what they mean for
    :class:`~refine.ratio.feature.FeatureRatio`. ``at(y)`` gives the ratio of one class, so
    every sampler runs per class with it. Fitted by :func:`fit_conditional_feature_ratio`
    (``refine fit-ratio --kind feature-sp --conditional``).
    """

    def __init__(
        self,
        feature_net: nn.Module,
        head: nn.Module,
        num_classes: int,
        *,
        activation: str = "softplus",
        image_size: int | None = None,
        differentiable: bool = True,
    ) -> None:
        self.num_classes = _check_classes(num_classes)
        declared = getattr(head, "num_classes", self.num_classes)
        if declared != self.num_classes:
            raise ConfigError(f"the ratio head knows {declared} classes, not num_classes={self.num_classes}")
        self._features = FeatureRatio(feature_net, head, activation=activation, image_size=image_size)
        self.feature_net, self.head, self.activation, self.image_size = feature_net, head, activation, image_size
        self.differentiable = differentiable

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self._features.features(x)

    def log_ratio_from_features(self, f: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return _log_activate(self.head(f, y.to(f.device)), self.activation)

    def log_ratio(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if y.shape != (x.shape[0],):
            raise ShapeError(
                f"labels have shape {tuple(y.shape)}; expected ({x.shape[0]},), one class index per sample"
            )
        return check_log_ratio(
            self.log_ratio_from_features(self.features(x), y), x.shape[0], "conditional DRE-F-SP ratio"
        )

    def __repr__(self) -> str:
        return f"ConditionalFeatureRatio({type(self.feature_net).__name__}, {type(self.head).__name__}, num_classes={self.num_classes}, activation={self.activation!r})"


def fit_conditional_feature_ratio(
    generator: ConditionalGenerator, real, **kwargs
) -> tuple[ConditionalFeatureRatio, dict]:
    """Fit cDR-RS's conditional ratio for ``generator`` against the labelled ImageData ``real``.

    Keyword arguments are those of :func:`refine.ratio.conditional_feature.fit_cdre_f_sp`.
    Returns the ratio (networks in eval mode without gradients) and the report, whose ``archs``
    entry holds the architecture configs needed to save it.
    """

    if not isinstance(generator, ConditionalGenerator):
        raise ConfigError(
            f"the conditional ratio is fitted for a class-conditional generator (a ConditionalGenerator), got {type(generator).__name__}"
        )
    fnet, head, report = fit_cdre_f_sp(generator, real, **kwargs)
    ratio = ConditionalFeatureRatio(
        fnet,
        head,
        generator.num_classes,
        activation=kwargs.get("activation", "softplus"),
        image_size=int(real.images.shape[-1]),
    )
    return ratio, report
