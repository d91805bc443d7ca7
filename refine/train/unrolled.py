"""Unrolled GAN (Metz et al. 2016) and differentiable inner optimisation steps.

The generator is trained against the discriminator it *would* face after ``unroll`` further
updates::

    theta_D^0 = theta_D,   theta_D^{i+1} = theta_D^i - step(grad L_D(theta_G, theta_D^i)),
    L_G^unrolled(theta_G) = L_G(theta_G, theta_D^unroll(theta_G)).

The ``unroll`` updates are computed functionally (``torch.func.functional_call`` on a copy of
the discriminator's parameters) with ``create_graph=True``, so the generator's gradient
includes how the discriminator reacts to it: the term that counters mode collapse.
``second_order=False`` drops that term (the unrolled discriminator is treated as a constant),
the paper's cheaper variant. ``g_loss="saddle"`` is the paper's objective (its appendix A and
the reference notebook): the generator maximises the discriminator's loss at the unrolled
parameters, ``-L_D(theta_G, theta_D^unroll(theta_G))``, real term included (it depends on
``theta_G`` through the unrolled updates); the default ``"ns"`` is the non-saturating
``-log D(G(z))`` at the unrolled parameters. Only the generator learns from the unrolled loss; the
discriminator itself takes its ordinary update (``d_steps`` per batch), and its optimiser is
not advanced by the unrolling.

The inner rule is plain SGD or Adam. The Adam rule starts from the discriminator optimiser's
current moments, as in the paper, and puts ``eps`` inside the square root
(``m / sqrt(v + eps^2)``) so that it stays differentiable where a gradient is zero.
:func:`differentiable_steps` is shared with Learning by Teaching (:mod:`.lbt`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.func import functional_call

from ..errors import ConfigError
from .gan import GAN
from .losses import d_loss_ns, g_loss_ns
from .registry import register_method

__all__ = ["UnrolledGAN", "differentiable_steps", "adam_moments", "UNROLL_RULES"]

UNROLL_RULES = ("sgd", "adam")
G_LOSSES = ("ns", "saddle")


def adam_moments(optimizer: torch.optim.Optimizer | None, module: nn.Module) -> dict | None:
    """``{"m": {name: t}, "v": {name: t}, "t": int}`` from ``optimizer``'s state for ``module``'s parameters (detached).

    Parameters the optimiser has not stepped yet start from zero moments. ``None`` if no
    parameter has any state (a fresh optimiser).
    """
    if optimizer is None:
        return None
    m, v, t = {}, {}, 0
    for name, p in module.named_parameters():
        st = optimizer.state.get(p) or {}
        if "exp_avg" in st:
            m[name] = st["exp_avg"].detach()
            v[name] = st["exp_avg_sq"].detach()
            t = max(t, int(st["step"]))
        else:
            m[name] = torch.zeros_like(p)
            v[name] = torch.zeros_like(p)
    return {"m": m, "v": v, "t": t} if t > 0 else None


def differentiable_steps(
    params: dict[str, torch.Tensor],
    loss_fn: Callable[[dict[str, torch.Tensor]], torch.Tensor],
    steps: int,
    *,
    lr: float,
    rule: str = "sgd",
    betas=(0.5, 0.999),
    eps: float = 1e-8,
    moments: dict | None = None,
    create_graph: bool = True,
) -> dict[str, torch.Tensor]:
    """Take ``steps`` descent steps on ``loss_fn(params)`` and return the new parameters.

    With ``create_graph=True`` the returned tensors are differentiable functions of whatever
    ``loss_fn`` depends on (e.g. a generator's parameters through its samples). ``params``
    must require grad; they are not modified. ``rule`` is ``"sgd"`` or ``"adam"`` (moments
    from :func:`adam_moments`, or zeros).
    """
    if rule not in UNROLL_RULES:
        raise ConfigError(f"unknown unroll rule {rule!r}; valid: {', '.join(UNROLL_RULES)}")
    names = list(params)
    cur = dict(params)
    b1, b2 = betas
    if rule == "adam":
        m = {k: (moments["m"][k] if moments else torch.zeros_like(cur[k])) for k in names}
        v = {k: (moments["v"][k] if moments else torch.zeros_like(cur[k])) for k in names}
        t = moments["t"] if moments else 0
    for _ in range(steps):
        loss = loss_fn(cur)
        grads = torch.autograd.grad(loss, [cur[k] for k in names], create_graph=create_graph, allow_unused=True)
        grads = [torch.zeros_like(cur[k]) if g is None else g for k, g in zip(names, grads)]
        if rule == "sgd":
            cur = {k: cur[k] - lr * g for k, g in zip(names, grads)}
        else:
            t += 1
            new = {}
            for k, g in zip(names, grads):
                m[k] = b1 * m[k] + (1 - b1) * g
                v[k] = b2 * v[k] + (1 - b2) * g * g
                mhat = m[k] / (1 - b1**t)
                vhat = v[k] / (1 - b2**t)
                new[k] = cur[k] - lr * mhat / torch.sqrt(vhat + eps * eps)
            cur = new
        if not create_graph:
            cur = {k: p.detach().requires_grad_(True) for k, p in cur.items()}
    return cur


def leaf_params(module: nn.Module) -> dict[str, torch.Tensor]:
    """Detached copies of ``module``'s parameters that require grad (the start of an unroll)."""
    return {k: p.detach().requires_grad_(True) for k, p in module.named_parameters()}


def apply_grads(params, grads) -> None:
    for p, g in zip(params, grads):
        p.grad = None if g is None else g.detach()


@register_method("unrolled")
class UnrolledGAN(GAN):
    """Non-saturating GAN whose generator step looks k discriminator updates ahead (differentiably).

    Options: ``unroll`` (k, default 5; 0 is the plain GAN), ``unroll_rule`` (``adam``, the
    paper's, or ``sgd``), ``unroll_lr`` (default: the discriminator's learning rate),
    ``second_order`` (differentiate through the unrolled updates; default true), ``g_loss``
    (``ns``, or ``saddle``: the paper's minimax objective).
    """

    def __init__(
        self,
        generator,
        discriminator,
        *,
        lr: float = 1e-3,
        betas=(0.5, 0.999),
        d_steps: int = 1,
        lr_d: float | None = None,
        unroll: int = 5,
        unroll_rule: str = "adam",
        unroll_lr: float | None = None,
        second_order: bool = True,
        g_loss: str = "ns",
    ):
        super().__init__(generator, discriminator, lr=lr, betas=betas, d_steps=d_steps, lr_d=lr_d)
        if int(unroll) < 0:
            raise ConfigError(f"unroll (discriminator steps looked ahead) must be >= 0, got {unroll}")
        if unroll_rule not in UNROLL_RULES:
            raise ConfigError(f"unknown unroll_rule {unroll_rule!r}; valid: {', '.join(UNROLL_RULES)}")
        self.unroll = int(unroll)
        self.unroll_rule = unroll_rule
        self.unroll_lr = float(unroll_lr if unroll_lr is not None else (lr_d or lr))
        if not self.unroll_lr > 0:
            raise ConfigError(f"unroll_lr must be > 0, got {unroll_lr}")
        self.betas = tuple(betas)
        self.second_order = bool(second_order)
        if g_loss not in G_LOSSES:
            raise ConfigError(f"unknown g_loss {g_loss!r}; valid: {', '.join(G_LOSSES)}")
        self.g_loss_kind = g_loss

    def unrolled_g_loss(self, z: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """The generator loss against the discriminator after ``unroll`` differentiable updates on ``(real, G(z))``."""
        fake = self.G(z)
        buffers = dict(self.D.named_buffers())

        def d_out(p, x):
            return functional_call(self.D, (p, buffers), (x,))

        params = leaf_params(self.D)
        if self.unroll:
            inner_fake = fake if self.second_order else fake.detach()
            moments = adam_moments(self.opt_d, self.D) if self.unroll_rule == "adam" else None
            params = differentiable_steps(
                params,
                lambda p: d_loss_ns(d_out(p, real), d_out(p, inner_fake)),
                self.unroll,
                lr=self.unroll_lr,
                rule=self.unroll_rule,
                betas=self.betas,
                moments=moments,
                create_graph=self.second_order,
            )
        if self.g_loss_kind == "saddle":
            return -d_loss_ns(d_out(params, real), d_out(params, fake))
        return g_loss_ns(d_out(params, fake))

    def step(self, real: torch.Tensor, *, rng=None) -> dict:
        b = len(real)
        for _ in range(self.d_steps):
            with torch.no_grad():
                fake = self.G(self.G.sample_latent(b, rng=rng))
            loss_d, _ = self.d_loss(real, fake)
            self.opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            self.opt_d.step()
        gparams = list(self.G.net.parameters())
        loss_g = self.unrolled_g_loss(self.G.sample_latent(b, rng=rng), real)
        apply_grads(gparams, torch.autograd.grad(loss_g, gparams, allow_unused=True))
        self.opt_g.step()
        return {"loss_d": loss_d.item(), "loss_g": loss_g.item()}
