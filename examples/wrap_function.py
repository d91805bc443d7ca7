"""Refine a plain function with a closed-form density ratio, and check the answer.

The "generator" is a function, G(z) = A z + b with z ~ N(0, I_2), so its samples
follow N(b, A A^T). The "data" are N(mu, S). Then the log density ratio is known
exactly,

    log r(x) = log N(x; mu, S) - log N(x; b, A A^T),

bounded here because S is narrower than A A^T in every direction. Refining G's
samples with r must give N(mu, S): the script prints each method's sample mean
and covariance next to the truth.

    python examples/wrap_function.py --n 20000

A function that leaves torch (here through numpy) gives no gradients: rejection,
MH and SIR still run on it, and a gradient method says so in one line.
"""

from __future__ import annotations

import argparse

import torch

import refine
from refine.errors import NotDifferentiableError

A = torch.tensor([[1.0, 0.0], [0.4, 0.8]])
B = torch.tensor([0.0, 0.0])
MU = torch.tensor([0.6, -0.3])
S = torch.tensor([[0.30, 0.05], [0.05, 0.20]])

p_gen = torch.distributions.MultivariateNormal(B, A @ A.T)
p_data = torch.distributions.MultivariateNormal(MU, S)


def G(z: torch.Tensor) -> torch.Tensor:
    return z @ A.T + B


def log_r(x: torch.Tensor) -> torch.Tensor:
    return p_data.log_prob(x) - p_gen.log_prob(x)


def G_numpy(z: torch.Tensor) -> torch.Tensor:
    """The same map computed outside torch: no autograd graph."""
    return torch.from_numpy(z.detach().numpy() @ A.T.numpy() + B.numpy())


METHODS = [
    ("none", {}),
    ("rs", {}),
    ("mh", {"k": 50}),
    ("sir", {"candidates": 50}),
    ("ddls", {"step_size": 0.05, "steps": 200}),
]


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument(
        "--methods", default=",".join(m for m, _ in METHODS), help="comma-separated subset of the methods below"
    )
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    chosen = args.methods.split(",")

    target = refine.wrap(G, latent_shape=2, prior="normal", ratio=refine.FunctionRatio(log_r))
    rows = []
    fmt = lambda t: "[" + ", ".join(f"{v:+.3f}" for v in t.flatten().tolist()) + "]"  # noqa: E731
    print(f"truth   mean {fmt(MU)}  cov {fmt(S)}")
    for method, options in METHODS:
        if method not in chosen or method not in refine.list_samplers():
            continue
        x = refine.sample(target, method, n=args.n, rng=torch.Generator().manual_seed(args.seed), **options).x.double()
        mean, cov = x.mean(0), torch.cov(x.T)
        rows.append({"method": method, "mean": mean, "cov": cov})
        print(f"{method:<7} mean {fmt(mean)}  cov {fmt(cov)}")

    plain = refine.wrap(G_numpy, latent_shape=2, ratio=refine.FunctionRatio(log_r))
    x = refine.sample(plain, "rs", n=min(args.n, 2000), rng=torch.Generator().manual_seed(args.seed)).x
    print(f"numpy G, rs: {len(x)} samples")
    if "ddls" in chosen and "ddls" in refine.list_samplers():
        try:
            refine.sample(plain, "ddls", n=10, rng=torch.Generator().manual_seed(args.seed))
        except NotDifferentiableError as e:
            print(f"numpy G, ddls: {e}")
    return rows


if __name__ == "__main__":
    main()
