"""Mode metrics for 2-D mixtures (DRS / VEEGAN protocols).

- ``hq_fraction``: fraction of samples within ``threshold`` standard deviations of
  their nearest mean (4 in the DRS protocol, 3 in VEEGAN's).
- ``modes``: number of modes with at least one high-quality sample.
- ``kl_uniform``: KL divergence of the histogram of high-quality samples over modes
  from the uniform distribution (0 when every mode is hit equally often).
"""

from __future__ import annotations

import math

import torch

from ..errors import ShapeError

__all__ = ["mode_metrics", "HQ_FRACTION", "MODES", "KL_UNIFORM"]

HQ_FRACTION = "hq_fraction"
MODES = "modes"
KL_UNIFORM = "kl_uniform"


@torch.no_grad()
def mode_metrics(x: torch.Tensor, mixture, *, threshold: float = 4.0) -> dict:
    """Return ``{hq_fraction, modes, kl_uniform, n, n_modes, threshold}`` for samples ``x`` (N, 2)."""
    x = torch.as_tensor(x)
    if x.dim() != 2 or x.shape[1] != 2:
        raise ShapeError(f"2-D mode metrics need samples of shape (N, 2), got {tuple(x.shape)}")
    if len(x) == 0:
        raise ShapeError("2-D mode metrics need at least one sample")
    means = mixture.means_tensor(x.device, torch.float64)
    d = torch.cdist(x.double(), means)
    dist, idx = d.min(1)
    hq = dist < threshold * mixture.std
    counts = torch.bincount(idx[hq], minlength=mixture.n_modes).double()
    k = mixture.n_modes
    if counts.sum() > 0:
        p = counts / counts.sum()
        nz = p > 0
        kl = float((p[nz] * torch.log(p[nz] * k)).sum())
    else:
        kl = math.inf
    return {
        HQ_FRACTION: float(hq.double().mean()),
        MODES: int((counts > 0).sum()),
        KL_UNIFORM: kl,
        "n": int(len(x)),
        "n_modes": k,
        "threshold": threshold,
    }
