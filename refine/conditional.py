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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from .checks import check_generator, check_gradients, check_pair, gradients_through_generator
from .conditional_models import (
    LABELS,
    ConditionalDiscriminatorRatio,
    ConditionalFeatureRatio,
    ConditionalFunctionRatio,
    ConditionalGenerator,
    ConditionalRatio,
    LabelledNet,
    _check_classes,
    _check_label,
    calibrate_per_class,
    encode_labels,
    fit_conditional_feature_ratio,
)
from .distributed import shard_seed
from .errors import CheckpointError, ConfigError, ShapeError
from .generator import LatentGenerator, Prior, network_error, unchanged_buffers
from .ratio.base import check_log_ratio
from .ratio.discriminator import DISCRIMINATOR_OUTPUTS
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
