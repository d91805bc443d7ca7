"""Fréchet distance between Gaussian fits of feature sets, and the statistics it needs.

- :func:`frechet_distance` computes, in float64,

      d² = |mu1 - mu2|² + tr(S1) + tr(S2) - 2 tr sqrt(sqrt(S1) S2 sqrt(S1))

  without ``scipy.linalg.sqrtm``: each covariance gets a symmetric eigendecomposition for its
  square root (eigenvalues that are zero within rounding, including tiny negative ones, are
  set to zero), and the cross term is the nuclear norm ``||sqrt(S2) sqrt(S1)||_*`` (sum of
  singular values), which equals ``tr sqrt(sqrt(S1) S2 sqrt(S1))`` because that matrix is
  ``A^T A`` for ``A = sqrt(S2) sqrt(S1)``. Singular values are computed to an absolute accuracy
  of about ``eps * ||A||``; taking square roots of the eigenvalues of ``A^T A`` instead would
  turn a rounding error of ``eps`` on a zero eigenvalue into ``sqrt(eps)``, which dominates
  when the covariances are rank-deficient (fewer samples than feature dimensions). The SVD is
  taken in the eigenbases, restricted to the non-zero eigenvalues, so it costs little when
  the statistics come from few samples.
- :class:`StatsAccumulator` streams features in chunks and returns ``(mu, sigma)`` with
  ``sigma`` the unbiased (``ddof=1``) covariance, as pytorch-fid's ``np.cov`` does. It keeps
  count, mean and the centred sum of outer products in float64 and combines chunks with the
  pairwise update of Chan, Golub and LeVeque, so partial results from several processes merge
  exactly (:meth:`StatsAccumulator.merge`) and no precision is lost to cancellation when the
  mean is large next to the spread.
- :func:`save_statistics` / :func:`load_statistics` read and write ``.npz`` files with keys
  ``mu`` and ``sigma``, the format of pytorch-fid's ``--save-stats``; writes are atomic.
- :class:`StatisticsCache` keeps real-data statistics keyed by dataset, split, preprocessing
  and network, under a directory given by the caller, ``$REFINE_CACHE``, ``$XDG_CACHE_HOME/refine``
  or ``~/.cache/refine`` (the order torch.hub follows for ``$TORCH_HOME``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, DataError, NonFiniteError, ShapeError

__all__ = [
    "FID",
    "CACHE_ENV",
    "frechet_distance",
    "fid_from_features",
    "feature_statistics",
    "StatsAccumulator",
    "save_statistics",
    "load_statistics",
    "load_statistics_meta",
    "default_cache_dir",
    "StatisticsCache",
]

FID = "fid"
"""Result key of the Fréchet Inception Distance."""

CACHE_ENV = "REFINE_CACHE"
"""Environment variable naming the cache directory (default ``$XDG_CACHE_HOME/refine``, else ``~/.cache/refine``)."""

# Relative size of a negative eigenvalue (or of an asymmetry) that is still taken for rounding
# error. Covariances stored in float32 carry relative errors near 1e-7; anything far beyond
# this tolerance is not a covariance matrix.
_PSD_RTOL = 1e-5


def _as_float64(x: Any, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


def _check_gaussian(mu: np.ndarray, sigma: np.ndarray, which: str) -> None:
    if mu.ndim != 1:
        raise ShapeError(f"mu{which} must be a vector (D,), got shape {mu.shape}")
    if sigma.shape != (mu.shape[0], mu.shape[0]):
        raise ShapeError(f"sigma{which} must be ({mu.shape[0]}, {mu.shape[0]}) to match mu{which}, got {sigma.shape}")
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise NonFiniteError(
            f"mu{which}/sigma{which} contain NaN or inf; recompute the statistics from finite features"
        )
    scale = float(np.abs(sigma).max(initial=0.0))
    asym = float(np.abs(sigma - sigma.T).max(initial=0.0))
    if asym > _PSD_RTOL * scale:
        raise ShapeError(
            f"sigma{which} is not symmetric (max |S - S^T| = {asym:.3g}, max |S| = {scale:.3g}); "
            "pass a covariance matrix"
        )


def _eigen_root(sigma: np.ndarray, which: str) -> tuple[np.ndarray, np.ndarray]:
    """``(V, sqrt(w))`` over the numerically non-zero eigenvalues ``w`` of a covariance.

    ``sqrt(sigma) = V diag(sqrt(w)) V^T``. Eigenvalues up to ``D * eps * max(w)`` (numpy's
    matrix-rank tolerance) are zero within rounding and are dropped; clearly negative ones mean
    the input is not a covariance.
    """
    w, v = np.linalg.eigh((sigma + sigma.T) / 2)
    if not w.size:
        return v, w
    top = max(float(w[-1]), 0.0)
    if w[0] < -_PSD_RTOL * top or (top == 0.0 and w[0] < 0.0):
        raise ConfigError(
            f"sigma{which} is not positive semi-definite (smallest eigenvalue {w[0]:.3g}, "
            f"largest {top:.3g}); pass a covariance matrix"
        )
    keep = w > len(w) * np.finfo(np.float64).eps * top
    return v[:, keep], np.sqrt(w[keep])


def frechet_distance(mu1: Any, sigma1: Any, mu2: Any, sigma2: Any) -> float:
    """Squared Fréchet (2-Wasserstein) distance between N(mu1, sigma1) and N(mu2, sigma2).

    Accepts numpy arrays or tensors; computes in float64 and returns a Python float >= 0.
    This is the FID when the statistics come from Inception pool3 features. It agrees with
    ``pytorch_fid.fid_score.calculate_frechet_distance`` on well-conditioned statistics and stays
    accurate on singular ones (see the module docstring).
    """
    mu1, sigma1 = _as_float64(mu1, "mu1"), _as_float64(sigma1, "sigma1")
    mu2, sigma2 = _as_float64(mu2, "mu2"), _as_float64(sigma2, "sigma2")
    _check_gaussian(mu1, sigma1, "1")
    _check_gaussian(mu2, sigma2, "2")
    if mu1.shape != mu2.shape:
        raise ShapeError(f"the two statistics have different dimensions: {mu1.shape[0]} and {mu2.shape[0]}")
    v1, r1 = _eigen_root(sigma1, "1")
    v2, r2 = _eigen_root(sigma2, "2")
    # sqrt(S2) sqrt(S1) = V2 B V1^T with orthonormal V1, V2, so both have the singular values of
    # B = diag(r2) V2^T V1 diag(r1), which is only rank(S2) x rank(S1).
    b = (r2[:, None] * (v2.T @ v1)) * r1[None, :]
    cross = float(np.linalg.svd(b, compute_uv=False).sum()) if b.size else 0.0
    diff = mu1 - mu2
    mean_term = float(diff @ diff)
    tr1, tr2 = float(np.trace(sigma1)), float(np.trace(sigma2))
    d2 = mean_term + tr1 + tr2 - 2.0 * cross
    if not np.isfinite(d2):
        raise NonFiniteError(f"the Fréchet distance is not finite ({d2}); the statistics overflow float64")
    # In exact arithmetic tr sqrt(...) <= (tr1 + tr2) / 2, so a negative result is rounding error.
    return max(d2, 0.0)


def _batches(features: Any) -> Iterable[Any]:
    if isinstance(features, (np.ndarray, torch.Tensor)):
        return (features,)
    return features


def feature_statistics(features: Any, *, chunk_size: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance (float64) of features ``(N, D)``.

    ``features`` is an array, a tensor, or an iterable of ``(n_i, D)`` batches (streamed).
    """
    acc = StatsAccumulator(chunk_size=chunk_size)
    for batch in _batches(features):
        acc.update(batch)
    return acc.compute()


def fid_from_features(features1: Any, features2: Any) -> float:
    """Fréchet distance between the Gaussian fits of two feature sets ``(N1, D)`` and ``(N2, D)``."""
    return frechet_distance(*feature_statistics(features1), *feature_statistics(features2))


class StatsAccumulator:
    """Streaming float64 mean and covariance of feature vectors.

    >>> acc = StatsAccumulator()
    >>> for batch in batches:            # doctest: +SKIP
    ...     acc.update(batch)            # (n, D) array or tensor
    >>> mu, sigma = acc.compute()        # doctest: +SKIP

    Partial accumulators (from several workers, or several passes) combine with
    :meth:`merge`; :meth:`state_dict` / :meth:`from_state_dict` turn one into plain arrays to
    send between processes. The result does not depend on how the rows were chunked, up to
    float64 rounding.
    """

    def __init__(self, dim: int | None = None, *, chunk_size: int = 4096) -> None:
        if chunk_size < 1:
            raise ConfigError(f"chunk_size must be >= 1, got {chunk_size}")
        self.chunk_size = int(chunk_size)
        self.count = 0
        self.dim = dim
        self.mean: np.ndarray | None = None if dim is None else np.zeros(dim)
        self.m2: np.ndarray | None = None if dim is None else np.zeros((dim, dim))

    def _combine(self, n_b: int, mean_b: np.ndarray, m2_b: np.ndarray) -> None:
        if n_b == 0:
            return
        if self.count == 0:
            self.count, self.mean, self.m2 = n_b, mean_b.copy(), m2_b.copy()
            return
        n_a = self.count
        n = n_a + n_b
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (n_b / n)
        self.m2 = self.m2 + m2_b + np.outer(delta, delta) * (n_a * n_b / n)
        self.count = n

    def update(self, features: Any) -> StatsAccumulator:
        """Add a batch of feature vectors ``(n, D)`` (array or tensor); returns ``self``."""
        x = features
        if isinstance(x, torch.Tensor):
            x = x.detach()
            if x.dim() != 2:
                raise ShapeError(f"features must be (N, D), got shape {tuple(x.shape)}")
        else:
            x = np.asarray(x)
            if x.ndim != 2:
                raise ShapeError(f"features must be (N, D), got shape {x.shape}")
        if self.dim is None:
            self.dim = int(x.shape[1])
        elif x.shape[1] != self.dim:
            raise ShapeError(f"features have dimension {x.shape[1]}, but this accumulator holds dimension {self.dim}")
        for start in range(0, x.shape[0], self.chunk_size):
            chunk = _as_float64(x[start : start + self.chunk_size], "features")
            if not np.isfinite(chunk).all():
                raise NonFiniteError(
                    f"features rows {start}..{start + len(chunk) - 1} contain NaN or inf; "
                    "check the feature network and its inputs"
                )
            mean = chunk.mean(axis=0)
            centred = chunk - mean
            self._combine(len(chunk), mean, centred.T @ centred)
        return self

    def merge(self, other: StatsAccumulator) -> StatsAccumulator:
        """Fold ``other``'s rows into this accumulator (``other`` is left unchanged); returns ``self``."""
        if not isinstance(other, StatsAccumulator):
            raise ConfigError(f"merge expects a StatsAccumulator, got {type(other).__name__}")
        if other.count == 0:
            return self
        if self.dim is not None and other.dim != self.dim:
            raise ShapeError(f"cannot merge statistics of dimension {other.dim} into dimension {self.dim}")
        self.dim = other.dim
        self._combine(other.count, other.mean, other.m2)
        return self

    def compute(self) -> tuple[np.ndarray, np.ndarray]:
        """``(mu, sigma)`` in float64; sigma is the unbiased covariance (divides by ``N - 1``)."""
        if self.count < 2:
            raise ShapeError(f"a covariance needs at least 2 feature vectors, got {self.count}")
        sigma = (self.m2 + self.m2.T) / (2.0 * (self.count - 1))
        return self.mean.copy(), sigma

    def state_dict(self) -> dict[str, Any]:
        """Plain values (count, mean, centred outer-product sum) for sending between processes."""
        return {
            "count": self.count,
            "dim": self.dim,
            "mean": None if self.mean is None else self.mean.copy(),
            "m2": None if self.m2 is None else self.m2.copy(),
        }

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> StatsAccumulator:
        acc = cls(state.get("dim"))
        if state["count"]:
            acc._combine(int(state["count"]), _as_float64(state["mean"], "mean"), _as_float64(state["m2"], "m2"))
        return acc


# --------------------------------------------------------------------------- .npz files


def _check_npz_path(path: str | os.PathLike) -> Path:
    p = Path(path)
    if p.suffix != ".npz":
        raise ConfigError(f"statistics files must end in .npz (pytorch-fid recognises them by that suffix), got {p}")
    return p


def save_statistics(path: str | os.PathLike, mu: Any, sigma: Any, *, meta: Mapping[str, Any] | None = None) -> Path:
    """Write ``mu`` and ``sigma`` (float64) to a ``.npz`` file that pytorch-fid can load.

    ``meta`` (JSON-serialisable) is stored as an extra ``meta`` string entry, which pytorch-fid
    ignores. The file is written to a temporary name in the same directory and then moved into
    place, so a reader never sees a partial file.
    """
    p = _check_npz_path(path)
    mu, sigma = _as_float64(mu, "mu"), _as_float64(sigma, "sigma")
    _check_gaussian(mu, sigma, "")
    arrays: dict[str, np.ndarray] = {"mu": mu, "sigma": sigma}
    if meta is not None:
        try:
            arrays["meta"] = np.array(json.dumps(dict(meta), sort_keys=True))
        except TypeError as e:
            raise ConfigError(f"statistics meta must be JSON-serialisable: {e}") from None
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return p


def _open_npz(path: str | os.PathLike):
    p = Path(path)
    if not p.is_file():
        raise DataError(f"statistics file {p} does not exist; compute it first (pytorch-fid --save-stats or refine)")
    try:
        return np.load(p, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise DataError(f"statistics file {p} is not a readable .npz file ({e}); recompute it") from None


def load_statistics(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read ``(mu, sigma)`` as float64 from a ``.npz`` file (ours or pytorch-fid's ``--save-stats``)."""
    with _open_npz(path) as f:
        missing = [k for k in ("mu", "sigma") if k not in f.files]
        if missing:
            raise DataError(
                f"statistics file {path} lacks {', '.join(missing)} (found keys: {', '.join(f.files) or 'none'}); "
                "expected an .npz with 'mu' and 'sigma'"
            )
        mu, sigma = np.asarray(f["mu"], dtype=np.float64), np.asarray(f["sigma"], dtype=np.float64)
    _check_gaussian(mu, sigma, "")
    return mu, sigma


def load_statistics_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The ``meta`` dict stored by :func:`save_statistics`, or ``{}`` if the file has none."""
    with _open_npz(path) as f:
        if "meta" not in f.files:
            return {}
        return json.loads(str(f["meta"]))


# --------------------------------------------------------------------------- cache


def default_cache_dir() -> Path:
    """``$REFINE_CACHE`` if set, else ``$XDG_CACHE_HOME/refine``, else ``~/.cache/refine``.

    The same rule as torch.hub's (``$TORCH_HOME``, else ``$XDG_CACHE_HOME/torch``, else
    ``~/.cache/torch``); an empty variable counts as unset.
    """
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "refine"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._]+", "_", text).strip("_.")[:40] or "x"


class StatisticsCache:
    """Real-data feature statistics on disk, keyed by what produced them.

    The key is (dataset, split, preprocessing, network): ``preprocessing`` is a string or a
    JSON-serialisable mapping and should name everything that changes the statistics (image
    size, value range, number of images, ...). Files live in ``<root>/fid_stats/`` as pytorch-fid
    compatible ``.npz`` files whose ``meta`` records the key.
    """

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()

    @staticmethod
    def _key_fields(dataset: str, split: str, preprocessing: str | Mapping[str, Any], network: str) -> dict[str, Any]:
        for name, value in (("dataset", dataset), ("split", split), ("network", network)):
            if not isinstance(value, str) or not value:
                raise ConfigError(f"cache key field {name} must be a non-empty string, got {value!r}")
        if isinstance(preprocessing, Mapping):
            preprocessing = dict(preprocessing)
        elif not isinstance(preprocessing, str):
            raise ConfigError(f"preprocessing must be a string or a mapping, got {type(preprocessing).__name__}")
        fields = {"dataset": dataset, "split": split, "preprocessing": preprocessing, "network": network}
        try:
            json.dumps(fields, sort_keys=True)
        except TypeError as e:
            raise ConfigError(f"cache key must be JSON-serialisable: {e}") from None
        return fields

    def key(self, dataset: str, split: str, preprocessing: str | Mapping[str, Any], network: str) -> str:
        """A file-name-safe key: readable prefix plus a hash of all four fields."""
        fields = self._key_fields(dataset, split, preprocessing, network)
        digest = hashlib.sha256(json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]
        return f"{_slug(dataset)}-{_slug(split)}-{_slug(network)}-{digest}"

    def path(self, dataset: str, split: str, preprocessing: str | Mapping[str, Any], network: str) -> Path:
        return self.root / "fid_stats" / f"{self.key(dataset, split, preprocessing, network)}.npz"

    def load(
        self, dataset: str, split: str, preprocessing: str | Mapping[str, Any], network: str
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Cached ``(mu, sigma)``, or None when absent."""
        p = self.path(dataset, split, preprocessing, network)
        if not p.is_file():
            return None
        stored = load_statistics_meta(p).get("key")
        wanted = self._key_fields(dataset, split, preprocessing, network)
        if stored != wanted:
            raise DataError(
                f"cached statistics {p} record key {stored!r}, not {wanted!r}; delete the file to recompute it"
            )
        return load_statistics(p)

    def save(
        self,
        dataset: str,
        split: str,
        preprocessing: str | Mapping[str, Any],
        network: str,
        mu: Any,
        sigma: Any,
        *,
        meta: Mapping[str, Any] | None = None,
    ) -> Path:
        """Store ``(mu, sigma)`` atomically; ``meta`` adds provenance (e.g. number of images)."""
        fields = self._key_fields(dataset, split, preprocessing, network)
        return save_statistics(
            self.path(dataset, split, preprocessing, network), mu, sigma, meta={**dict(meta or {}), "key": fields}
        )

    def get_or_compute(
        self,
        dataset: str,
        split: str,
        preprocessing: str | Mapping[str, Any],
        network: str,
        compute: Callable[[], tuple[Any, Any]],
        *,
        meta: Mapping[str, Any] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Cached ``(mu, sigma)``; on a miss, call ``compute()`` for them, store and return them."""
        hit = self.load(dataset, split, preprocessing, network)
        if hit is not None:
            return hit
        result = compute()
        if not (isinstance(result, tuple) and len(result) == 2):
            raise ConfigError(f"compute() must return (mu, sigma), got {type(result).__name__}")
        p = self.save(dataset, split, preprocessing, network, *result, meta=meta)
        return load_statistics(p)
