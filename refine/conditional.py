"""Class-conditional generators: ``G(z, y)`` refined one class at a time.

The conditional target is ``log pi(z | y) = log p0(z) + log r(G(z, y) | y)``. For a fixed
label ``y`` it is an ordinary :class:`~refine.target.LatentTarget` whose generator is
``z -> G(z, y)`` and whose ratio is ``x -> log r(x | y)``, so a conditional run is ``K``
unconditional runs, one per class, and every sampler is conditional by construction:

- rejection methods estimate their bound ``M_y`` (DRS its ``gamma`` shift) per class;
- MH chains and SIR candidates stay within their class;
- gradient methods move ``z`` with ``y`` fixed;
- the number of samples per class is fixed before sampling (:func:`class_plan`), so the
  class proportions are exact, whatever the acceptance rate of each class.

Each class draws from its own random stream, seeded by
``refine.distributed.shard_seed(seed, class)``: the samples of class 3 are the same whether
they were asked for alone or together with others, and a run is reproducible from its seed.

How the label reaches the networks is declared, as the output range is (:data:`LABELS`):
``"index"`` passes an integer tensor ``(N,)`` (for an ``nn.Embedding`` or a conditional
BatchNorm), ``"onehot"`` a float tensor ``(N, K)``. Both networks are called as
``G(z, y)`` and ``D(x, y)``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .checks import check_generator, check_gradients, check_pair, gradients_through_generator
from .distributed import shard_seed
from .errors import CheckpointError, ConfigError, ShapeError
from .generator import LatentGenerator, Prior, network_error, unchanged_buffers
from .ratio.base import FunctionRatio, check_log_ratio
from .ratio.calibration import calibrate
from .ratio.conditional_feature import fit_cdre_f_sp
from .ratio.discriminator import DISCRIMINATOR_OUTPUTS, DiscriminatorRatio
from .ratio.feature import ACTIVATIONS, FeatureRatio, _log_activate
from .samplers.base import SampleResult
from .target import LatentTarget
from .validate import MAX_SAMPLES, as_int

__all__ = [
    "LABELS",
    "ConditionalDiscriminatorRatio",
    "ConditionalFeatureRatio",
    "ConditionalFunctionRatio",
    "ConditionalGenerator",
    "ConditionalRatio",
    "ConditionalSampleResult",
    "ConditionalTarget",
    "LabelledNet",
    "calibrate_per_class",
    "class_plan",
    "encode_labels",
    "fit_conditional_feature_ratio",
    "is_conditional",
    "parse_classes",
    "sample_conditional",
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
        if activation not in ACTIVATIONS:
            raise ConfigError(f"unknown ratio activation {activation!r}; valid: {', '.join(ACTIVATIONS)}")
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


class ConditionalTarget:
    """``pi(z | y) ∝ p0(z) r(G(z, y) | y)``; ``at(y)`` is class ``y``'s :class:`LatentTarget`.

    ``ratio=None`` is the raw conditional generator (method ``none`` only).
    """

    def __init__(
        self, generator: ConditionalGenerator, ratio: ConditionalRatio | None = None, *, prior_term: bool = True
    ) -> None:
        if not isinstance(generator, ConditionalGenerator):
            raise ConfigError(
                f"generator must be a refine.conditional.ConditionalGenerator, got {type(generator).__name__}; "
                "wrap your network with refine.wrap(..., num_classes=K)"
            )
        if ratio is not None and not isinstance(ratio, ConditionalRatio):
            raise ConfigError(
                f"a conditional target needs a conditional ratio (log_ratio(x, y)), got {type(ratio).__name__}"
            )
        if ratio is not None and ratio.num_classes != generator.num_classes:
            raise ConfigError(
                f"the ratio knows {ratio.num_classes} classes but the generator {generator.num_classes}; they must be trained on the same labels"
            )
        self.generator, self.ratio, self.prior_term = generator, ratio, prior_term

    @property
    def num_classes(self) -> int:
        return self.generator.num_classes

    @property
    def prior(self) -> Prior:
        return self.generator.prior

    @property
    def device(self) -> torch.device:
        return self.generator.device

    def at(self, y: int) -> LatentTarget:
        return LatentTarget(
            self.generator.at(y), None if self.ratio is None else self.ratio.at(y), prior_term=self.prior_term
        )

    def __repr__(self) -> str:
        return f"ConditionalTarget({self.generator!r}, {self.ratio!r})"


def is_conditional(target) -> bool:
    return isinstance(target, (ConditionalTarget, ConditionalGenerator))


# --------------------------------------------------------------------------- class plans
def parse_classes(spec: str | int | Sequence[int] | Mapping[int, int] | None, num_classes: int):
    """A CLI or API class request: ``"balanced"``, ``"3"``, ``"3,7"`` (strings are parsed) or what :func:`class_plan` takes."""
    if isinstance(spec, str):
        text = spec.strip().lower()
        if text in ("balanced", "all", ""):
            return "balanced"
        try:
            values = [int(p) for p in text.split(",") if p.strip()]
        except ValueError:
            raise ConfigError(
                f"--classes {spec!r}: expected 'balanced' or class indices such as 3,7 (0 to {num_classes - 1})"
            ) from None
        return values
    return spec


def class_plan(n: int, classes="balanced", num_classes: int | None = None) -> list[tuple[int, int]]:
    """``[(class, count), ...]``: how ``n`` samples are split over classes, fixed before sampling.

    ``classes`` is ``"balanced"`` (all ``num_classes`` classes), one class index, a list of
    distinct classes, or a mapping ``{class: count}`` whose counts sum to ``n``. A list (and
    ``"balanced"``) gives each class ``n // k`` samples, and the first ``n % k`` classes in the
    order given one more, so the split is exact and deterministic. Classes with no samples
    are left out.
    """
    n = as_int(n, "number of samples", minimum=1, maximum=MAX_SAMPLES)
    if num_classes is None:
        raise ConfigError("class_plan needs num_classes")
    k = _check_classes(num_classes)
    classes = parse_classes(classes, k)

    def cls(c) -> int:
        return as_int(c, "class", minimum=0, maximum=k - 1)

    if isinstance(classes, Mapping):
        plan = [(cls(c), as_int(m, f"count of class {c}", minimum=0, maximum=MAX_SAMPLES)) for c, m in classes.items()]
        if sum(m for _, m in plan) != n:
            raise ConfigError(f"the class counts sum to {sum(m for _, m in plan)}, not n={n}; make them add up to n")
        return [(c, m) for c, m in plan if m]
    if classes is None or (isinstance(classes, str) and classes == "balanced"):
        order = list(range(k))
    elif isinstance(classes, str):
        raise ConfigError(
            f"classes={classes!r}: expected 'balanced', a class index, a list of them or a mapping {{class: count}}"
        )
    elif isinstance(classes, torch.Tensor) and classes.dim() == 0:
        order = [cls(classes)]
    elif isinstance(classes, (Sequence, torch.Tensor)):
        order = [cls(c) for c in classes]
        if not order:
            raise ConfigError("classes is empty; give at least one class index, or 'balanced'")
        if len(set(order)) != len(order):
            raise ConfigError(
                f"classes {order} repeat a class; give each class once (or a mapping {{class: count}} for unequal counts)"
            )
    else:
        order = [cls(classes)]
    q, r = divmod(n, len(order))
    return [(c, q + (i < r)) for i, c in enumerate(order) if q + (i < r)]


# --------------------------------------------------------------------------- sampling
@dataclass
class ConditionalSampleResult(SampleResult):
    """A :class:`SampleResult` with the class index ``y`` ``(N,)`` of every sample, grouped by class in plan order."""

    y: torch.Tensor | None = None


#: Per-sample cost keys, averaged over classes weighted by their counts.
_PER_SAMPLE = ("proposals_per_sample", "g_evals_per_sample", "d_evals_per_sample")
_TOTALS = ("g_evals", "d_evals", "wall_time_s")


def _merge_info(method: str, plan: list[tuple[int, int]], infos: list[dict]) -> dict:
    n = sum(m for _, m in plan)
    out: dict = {
        "method": method,
        "n": n,
        "conditional": True,
        "classes": [c for c, _ in plan],
        "counts": {str(c): m for c, m in plan},
    }
    for key in _TOTALS:
        if all(isinstance(i.get(key), (int, float)) for i in infos):
            out[key] = sum(i[key] for i in infos)
    for key in _PER_SAMPLE:
        if all(isinstance(i.get(key), (int, float)) for i in infos):
            out[key] = sum(i[key] * m for i, (_, m) in zip(infos, plan)) / n
    if isinstance(out.get("proposals_per_sample"), float) and out["proposals_per_sample"] > 0:
        out["acceptance_rate"] = 1.0 / out["proposals_per_sample"]
    out["per_class"] = {str(c): i for (c, _), i in zip(plan, infos)}
    return out


def _class_real(real, real_y, c: int):
    if real is None:
        return None
    if real_y is None:
        raise ConfigError(
            "a conditional run given real samples needs their labels too (real_y=, one class index per row)"
        )
    if real_y.shape != (real.shape[0],):
        raise ShapeError(
            f"real_y has shape {tuple(real_y.shape)}; expected ({real.shape[0]},), one class index per real sample"
        )
    return real[real_y.to(real.device) == c]


def sample_conditional(
    sampler,
    target: ConditionalTarget | ConditionalGenerator,
    n: int,
    *,
    classes="balanced",
    seed: int | None = None,
    rng: torch.Generator | None = None,
    progress: bool = False,
    real: torch.Tensor | None = None,
    real_y: torch.Tensor | None = None,
) -> ConditionalSampleResult:
    """Run ``sampler`` once per class of :func:`class_plan` ``(n, classes)`` and gather the results.

    Class ``c`` draws on a generator seeded by ``shard_seed(seed, c)``; without ``seed``, one
    is drawn from ``rng`` (or torch's global generator when ``rng`` is None too). Real samples
    (for methods that start from or learn on data) are split by their labels ``real_y``.
    Returns ``x``, ``z`` (None if the method keeps no latents), ``y`` and an info record with
    the cost summed over classes, per-sample costs averaged by count, and ``per_class``.
    """
    if isinstance(target, ConditionalGenerator):
        target = ConditionalTarget(target)
    if not isinstance(target, ConditionalTarget):
        raise ConfigError(
            f"sample_conditional needs a ConditionalTarget (what refine.wrap(..., num_classes=K) returns), got {type(target).__name__}"
        )
    method = sampler.name or type(sampler).__name__
    if target.ratio is None and method != "none":
        raise ConfigError(
            f"method {method!r} needs a density ratio: wrap the generator with discriminator= (and output=) or ratio="
        )
    plan = class_plan(n, classes, target.num_classes)
    if seed is None:
        seed = int(torch.randint(0, 2**62, (1,), generator=rng))
    seed = as_int(seed, "seed", minimum=0, maximum=2**63 - 1)
    if sampler.needs_gradients:
        first = target.at(plan[0][0])
        check_gradients(
            first.generator, first.ratio, method=method, through_generator=gradients_through_generator(sampler)
        )
    xs, zs, ys, infos = [], [], [], []
    for c, m in plan:
        result = sampler.sample(
            target.at(c),
            m,
            rng=torch.Generator().manual_seed(shard_seed(seed, c)),
            progress=progress,
            real=_class_real(real, real_y, c),
        )
        xs.append(result.x)
        zs.append(result.z)
        ys.append(torch.full((len(result.x),), c, dtype=torch.long, device=result.x.device))
        infos.append({**result.info, "class": c, "seed": shard_seed(seed, c)})
    z = None if any(t is None for t in zs) else torch.cat(zs)
    info = _merge_info(method, plan, infos)
    info["seed"] = seed
    return ConditionalSampleResult(torch.cat(xs), z, info, torch.cat(ys))


# --------------------------------------------------------------------------- checks
def probe(generator: ConditionalGenerator, ratio: ConditionalRatio | None = None) -> torch.Tensor:
    """Run ``G`` (and ``D``) on two latents with the labels ``0`` and ``K - 1``; one-line errors if the
    label convention or the number of classes does not fit the networks. Buffers are left as they were."""
    z = generator.prior.sample(2, rng=torch.Generator().manual_seed(0), device=generator.device)
    y = torch.tensor([0, generator.num_classes - 1], device=generator.device)
    how = f"labels passed as {generator.label!r} with num_classes={generator.num_classes}"
    with torch.no_grad(), unchanged_buffers(generator.net):
        try:
            x = generator(z, y)
        except (RuntimeError, IndexError, TypeError, ValueError, AssertionError) as e:
            raise ShapeError(
                f"the generator ({type(generator.net).__name__}) cannot be called as G(z, y) with {how}: "
                f"{(str(e).splitlines() or [type(e).__name__])[0][:160]}; check num_classes and label= ('index' or 'onehot')"
            ) from None
    if not isinstance(x, torch.Tensor) or x.shape[0] != 2:
        raise ShapeError(
            f"the generator returned {type(x).__name__} {tuple(getattr(x, 'shape', ()))} for 2 latents; expected a tensor (2, ...)"
        )
    if ratio is not None:
        net = getattr(ratio, "net", None)
        with torch.no_grad(), unchanged_buffers(net):
            try:
                out = ratio.log_ratio(x, y)
            except (RuntimeError, IndexError, TypeError, ValueError, AssertionError) as e:
                err = (
                    network_error(e, "conditional ratio", x, "is it the discriminator trained with this generator?")
                    if isinstance(e, RuntimeError)
                    else None
                )
                raise (
                    err
                    or ShapeError(
                        f"the conditional ratio ({type(net or ratio).__name__}) cannot be called as D(x, y) on the generator's samples with {how}: "
                        f"{(str(e).splitlines() or [type(e).__name__])[0][:160]}"
                    )
                ) from None
        check_log_ratio(out, 2, "conditional ratio")
    return x


def wrap_conditional(
    generator,
    *,
    num_classes: int,
    label: str = "index",
    latent_shape=None,
    prior="normal",
    output_range: str | None = None,
    discriminator=None,
    output: str | None = None,
    temperature: float = 1.0,
    ratio=None,
    differentiable: bool | None = None,
    check: bool = True,
) -> ConditionalTarget | ConditionalGenerator:
    """:func:`refine.wrap` for a conditional generator ``G(z, y)`` (and ``D(x, y)``); see its docs.

    ``ratio=`` must be a :class:`ConditionalRatio`. With ``check``, both networks are run on two
    latents with the labels ``0`` and ``K - 1`` (so a wrong ``num_classes`` or label convention
    fails here, in one line), and class 0's generator and ratio go through the same checks as
    an unconditional pair (latent shape, declared image range, one score per sample).
    """
    if isinstance(generator, (ConditionalTarget, LatentTarget)):
        raise ConfigError(
            f"wrap() got a {type(generator).__name__}, which is already wrapped; pass it to refine.sample directly"
        )
    if isinstance(generator, (LatentGenerator, ConditionalGenerator)):
        raise ConfigError(
            "wrap(..., num_classes=K) takes the conditional network G(z, y) itself, not a wrapped generator"
        )
    if isinstance(prior, Prior) and latent_shape is None:
        latent_shape = prior.shape
    if isinstance(prior, dict) and latent_shape is None and prior.get("shape") is not None:
        latent_shape = prior["shape"]
    if latent_shape is None:
        raise ConfigError(
            "wrap() needs the generator's latent_shape, e.g. latent_shape=128 or latent_shape=(100, 1, 1) (or a Prior object)"
        )
    gen = ConditionalGenerator(
        generator,
        num_classes,
        label=label,
        prior=prior,
        latent_shape=latent_shape,
        output_range=output_range or "none",
        differentiable=differentiable,
    )
    if discriminator is not None and ratio is not None:
        raise ConfigError("pass either discriminator= or ratio=, not both")
    if discriminator is not None:
        if output is None:
            raise ConfigError(
                f"say what the discriminator returns: output= one of {', '.join(DISCRIMINATOR_OUTPUTS)} "
                "('logit' before the sigmoid, 'prob' after it, 'critic' for a WGAN critic)"
            )
        ratio = ConditionalDiscriminatorRatio(
            discriminator, gen.num_classes, output, label=gen.label, temperature=temperature
        )
    elif output is not None:
        raise ConfigError("output= describes a discriminator; pass discriminator= too (or drop output=)")
    if ratio is not None and not isinstance(ratio, ConditionalRatio):
        raise ConfigError(
            f"ratio= of a conditional generator must be a refine.conditional.ConditionalRatio (log_ratio(x, y)), got {type(ratio).__name__}; "
            "for a network D(x, y) use discriminator= with output="
        )
    target = ConditionalTarget(gen, ratio) if ratio is not None else None
    if check:
        x = probe(gen, ratio)
        first = gen.at(0)
        check_generator(first, output_range=output_range, source=f"the generator ({type(generator).__name__})")
        if ratio is not None:
            check_pair(first, ratio.at(0), x=x)
    return target if target is not None else gen


def conditional_from_checkpoint(entry, gnet, prior: Prior, output_range: str, dnet, output: str | None, path):
    """``(ConditionalGenerator, ConditionalDiscriminatorRatio | None)`` from a checkpoint's ``conditional`` entry
    (``{"num_classes": K, "label": "index"}``), checked as the rest of the schema is."""
    if not isinstance(entry, dict) or set(entry) - {"num_classes", "label"} or "num_classes" not in entry:
        raise CheckpointError(
            f"{path}: the conditional entry must be {{'num_classes': K, 'label': 'index'|'onehot'}}, got {entry!r:.120}"
        )
    try:
        k, label = _check_classes(entry["num_classes"]), _check_label(entry.get("label", "index"))
    except ConfigError as e:
        raise CheckpointError(f"{path}: conditional: {e}") from None
    for role, net in (("generator", gnet), ("discriminator", dnet)):
        declared = getattr(net, "num_classes", k)
        if net is not None and declared != k:
            raise CheckpointError(
                f"{path}: the {role} is built for {declared} classes but the checkpoint declares num_classes={k}"
            )
    gen = ConditionalGenerator(gnet, k, label=label, prior=prior, output_range=output_range)
    ratio = None if dnet is None else ConditionalDiscriminatorRatio(dnet, k, output or "logit", label=label)
    return gen, ratio
