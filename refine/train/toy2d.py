"""Recipes for the 2-D benchmark GAN (DRS / Ding et al. protocol).

Data: a 2-D mixture (default ``grid25``: means {-2,...,2}^2, std 0.05), 50,000 training
points. G: 2->100->100->100->2 (ReLU), z ~ N(0, I_2); D: 2->100->100->100->1.
Non-saturating loss, Adam lr 1e-3, betas (0.5, 0.999), batch 512.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import torch
from torch import nn

from ..data.toy2d import get_mixture
from ..errors import CheckpointError, ConfigError
from ..generator import LatentGenerator, NormalPrior, UniformPrior
from ..io import save_gan
from ..nets import arch_config, build_from_config
from .checkpointing import STATE_KEY, restore_training_state
from .loop import fit
from .registry import get_method

__all__ = [
    "TOY_PROTOCOL",
    "toy_networks",
    "method_networks",
    "ToyRun",
    "train_toy",
    "save_toy_checkpoint",
    "load_extra_networks",
    "train_toy_gan",
]

TOY_PROTOCOL = {"n_train": 50_000, "hidden": 100, "depth": 3, "lr": 1e-3, "betas": (0.5, 0.999), "batch_size": 512}


def toy_networks(hidden: int = 100, depth: int = 3, *, latent_dim: int = 2):
    """``(G, D, g_arch, d_arch)`` for the 2-D benchmark."""
    g_arch = arch_config("mlp", in_dim=latent_dim, out_dim=2, hidden=hidden, depth=depth)
    d_arch = arch_config("mlp", in_dim=2, out_dim=1, hidden=hidden, depth=depth)
    return build_from_config(g_arch), build_from_config(d_arch), g_arch, d_arch


def method_networks(
    method_cls, *, x_dim: int, z_dim: int, hidden: int, depth: int, options: dict | None = None
) -> dict[str, dict]:
    """Architecture configs of the networks a training method needs besides the generator.

    A method class may define a classmethod ``networks(x_dim=, z_dim=, hidden=, depth=, options=)``
    returning ``{name: arch_config}``; each network is built and passed to the method's
    constructor as the keyword ``name``. The key ``"discriminator"`` is the discriminator on
    ``x`` (the checkpoint's discriminator, the ratio ``refine sample`` uses); a method without
    one (VEEGAN, LBT) leaves the key out and gets ``discriminator=None``. Without the hook a
    method gets one MLP discriminator on ``x``.
    """
    hook = getattr(method_cls, "networks", None)
    if hook is None:
        return {"discriminator": arch_config("mlp", in_dim=x_dim, out_dim=1, hidden=hidden, depth=depth)}
    return dict(hook(x_dim=x_dim, z_dim=z_dim, hidden=hidden, depth=depth, options=dict(options or {})))


def check_method_options(method_cls, options: dict, *, networks=()) -> None:
    """Unknown option names are errors naming the valid ones (no silently ignored typo)."""
    params = inspect.signature(method_cls).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    valid = [n for n, p in params.items() if p.kind is p.KEYWORD_ONLY and n not in networks]
    unknown = sorted(set(options) - set(valid))
    name = getattr(method_cls, "method_name", method_cls.__name__)
    if unknown:
        raise ConfigError(
            f"unknown option(s) {', '.join(unknown)} for training method {name!r}; valid: {', '.join(valid)}"
        )
    for key, value in options.items():
        if value is None and params[key].default is None:  # e.g. lr_d=None: "use the default"
            continue
        expected = _option_kind(params[key])
        if expected is not None and not _fits(value, expected):
            raise ConfigError(f"option {key}={value!r} for training method {name!r}: expected {expected}")


def _option_kind(param) -> str | None:
    """'number', 'integer', 'bool', 'text' or 'numbers' from an option's default (or its annotation when the default is None)."""
    d = param.default
    if isinstance(d, bool):
        return "bool"
    if isinstance(d, int):
        return "integer"
    if isinstance(d, float):
        return "number"
    if isinstance(d, str):
        return "text"
    if isinstance(d, (tuple, list)) and d and all(isinstance(v, (int, float)) for v in d):
        return "numbers"
    ann = str(param.annotation)
    if d is None and "float" in ann:
        return "number"
    if d is None and "int" in ann:
        return "integer"
    return None


def _fits(value, kind: str) -> bool:
    if kind == "bool":
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if kind == "integer":
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if kind == "number":
        return isinstance(value, (int, float))
    if kind == "text":
        return isinstance(value, str)
    return isinstance(value, (list, tuple)) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
    )


@dataclass
class ToyRun:
    """A trained 2-D method: its generator, x-discriminator (or None), other networks and record."""

    generator: LatentGenerator
    discriminator: nn.Module | None
    networks: dict[str, nn.Module]
    archs: dict[str, dict]
    discriminator_output: str
    meta: dict = field(default_factory=dict)


def train_toy(
    dataset: str = "grid25",
    *,
    epochs: int = 10,
    n_train: int = 50_000,
    method: str = "gan",
    hidden: int = 100,
    depth: int = 3,
    batch_size: int = 512,
    latent_dim: int = 2,
    rng: torch.Generator | None = None,
    device="cpu",
    progress: bool = False,
    method_options: dict | None = None,
    init_seed: int | None = None,
    resume: dict | None = None,
    on_epoch=None,
    activation: str = "relu",
    prior: str = "normal",
    disc_hidden: int | None = None,
) -> ToyRun:
    """Train any registered method on a 2-D mixture; returns a :class:`ToyRun`.

    Network initialisation uses ``init_seed`` (torch's global RNG is saved and restored
    around it, so the caller's state is untouched); data, latents and shuffling use ``rng``.
    ``resume`` is a training state (:mod:`refine.train.checkpointing`) to continue from,
    with the same settings and seed; ``on_epoch(epoch, run, trainer)`` runs after each
    epoch (periodic checkpoints). ``activation`` is every MLP's hidden activation (``relu``,
    ``tanh``, ``leaky_relu`` (slope 0.2), ...). ``prior`` is the latent prior, ``"normal"``
    (N(0, I)) or ``"uniform"`` (U[-1, 1]^latent_dim, as in the DOT paper's 2-D demo);
    ``disc_hidden`` the width of the MLP discriminator's hidden layers (default ``hidden``).
    """
    mixture = get_mixture(dataset)
    cls = get_method(method)
    # A method may declare its own toy-setting defaults (e.g. WGAN-GP: Adam 1e-4, betas (0.5, 0.9)).
    defaults = getattr(cls, "toy_defaults", {"lr": TOY_PROTOCOL["lr"], "betas": TOY_PROTOCOL["betas"]})
    opts = {**defaults, **(method_options or {})}
    data = mixture.sample(n_train, rng=rng).to(device)
    g_arch = arch_config("mlp", in_dim=latent_dim, out_dim=2, hidden=hidden, depth=depth)
    archs = method_networks(cls, x_dim=2, z_dim=latent_dim, hidden=hidden, depth=depth, options=opts)
    d = archs.get("discriminator")
    if disc_hidden is not None and d is not None and d.get("name") == "mlp":
        archs = {**archs, "discriminator": {**d, "kwargs": {**d["kwargs"], "hidden": int(disc_hidden)}}}
    if activation != "relu":  # the default leaves the configs (and checkpoints) as they were
        g_arch = {**g_arch, "kwargs": {**g_arch["kwargs"], "activation": activation}}
        archs = {
            k: (
                {**a, "kwargs": {**a["kwargs"], "activation": activation}}
                if a.get("name", a.get("arch")) == "mlp"
                else a
            )
            for k, a in archs.items()
        }
    with torch.random.fork_rng(devices=[]):
        if init_seed is not None:
            torch.manual_seed(init_seed)
        gnet = build_from_config(g_arch)
        nets = {name: build_from_config(a) for name, a in archs.items()}
    gnet.to(device)
    for net in nets.values():
        net.to(device)
    if prior not in ("normal", "uniform"):
        raise ConfigError(f"unknown latent prior {prior!r}; valid: normal, uniform")
    G = LatentGenerator(gnet, NormalPrior((latent_dim,)) if prior == "normal" else UniformPrior((latent_dim,)))
    dnet = nets.pop("discriminator", None)
    check_method_options(cls, opts, networks=nets)
    trainer = cls(G, dnet, **nets, **opts)
    meta = {
        "dataset": dataset,
        "n_train": n_train,
        "epochs": epochs,
        "method": method,
        "batch_size": batch_size,
        "latent_dim": latent_dim,
        "hidden": hidden,
        "depth": depth,
        "activation": activation,
        **({"prior": prior} if prior != "normal" else {}),
        **({"disc_hidden": int(disc_hidden)} if disc_hidden is not None else {}),
        "options": {k: list(v) if isinstance(v, tuple) else v for k, v in opts.items()},
        "init_seed": init_seed,
        "history": [],
    }
    run = ToyRun(G, dnet, nets, {"generator": g_arch, **archs}, getattr(cls, "discriminator_output", "logit"), meta)
    start, past = restore_training_state(trainer, resume, rng=rng) if resume is not None else (0, [])

    def after_epoch(epoch, history):
        run.meta["history"] = past + history
        if on_epoch is not None:
            on_epoch(epoch, run, trainer)

    run.meta["history"] = past + fit(
        trainer,
        data,
        epochs=epochs,
        batch_size=batch_size,
        rng=rng,
        device=device,
        progress=progress,
        start_epoch=start,
        on_epoch=after_epoch,
    )
    return run


def save_toy_checkpoint(path, run: ToyRun, *, meta: dict | None = None, train_state: dict | None = None) -> None:
    """Write ``run`` as a ``refine.gan`` checkpoint; networks other than G and D go under ``extra["networks"]``,
    a training state to resume from under ``extra["train_state"]``."""
    extra = {}
    if run.networks:
        extra["networks"] = {
            name: {"arch": run.archs[name], "state": {k: v.detach().cpu() for k, v in net.state_dict().items()}}
            for name, net in run.networks.items()
        }
    if train_state is not None:
        extra[STATE_KEY] = train_state
    save_gan(
        path,
        generator=run.generator.net,
        generator_arch=run.archs["generator"],
        prior=run.generator.prior,
        discriminator=run.discriminator,
        discriminator_arch=run.archs.get("discriminator"),
        discriminator_output=run.discriminator_output,
        output_range="none",
        meta={**run.meta, **(meta or {})},
        extra=extra or None,
    )


def load_extra_networks(config: dict, *, device="cpu") -> dict[str, nn.Module]:
    """The networks stored under ``extra["networks"]`` of a loaded checkpoint dict (eval mode, no grad)."""
    out = {}
    for name, entry in ((config.get("extra") or {}).get("networks") or {}).items():
        try:
            net = build_from_config(entry["arch"])
            net.load_state_dict(entry["state"])
        except (ConfigError, KeyError, RuntimeError) as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise CheckpointError(f"network {name!r} in the checkpoint cannot be rebuilt ({first[:200]})") from None
        out[name] = net.eval().requires_grad_(False).to(device)
    return out


def train_toy_gan(
    dataset: str = "grid25",
    *,
    epochs: int = 10,
    n_train: int = 50_000,
    method: str = "gan",
    hidden: int = 100,
    depth: int = 3,
    batch_size: int = 512,
    rng: torch.Generator | None = None,
    device="cpu",
    progress: bool = False,
    method_options: dict | None = None,
    init_seed: int | None = None,
):
    """Train a 2-D GAN; returns ``(generator, discriminator, meta)`` (see :func:`train_toy` for every network).

    Network initialisation uses ``init_seed`` (torch's global RNG is saved and restored
    around it, so the caller's state is untouched); data, latents and shuffling use ``rng``.
    """
    run = train_toy(
        dataset,
        epochs=epochs,
        n_train=n_train,
        method=method,
        hidden=hidden,
        depth=depth,
        batch_size=batch_size,
        rng=rng,
        device=device,
        progress=progress,
        method_options=method_options,
        init_seed=init_seed,
    )
    meta = {**run.meta, "g_arch": run.archs["generator"], "d_arch": run.archs.get("discriminator")}
    return run.generator, run.discriminator, meta
