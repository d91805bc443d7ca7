"""Refined samples per second of every registered sampler, next to the bound it could reach.

For each network pair (the 2-D MLPs of the DRS benchmark and a DCGAN at 32 px; 64 px with
``--configs dcgan64``) and each sampler in the registry, this script measures

- **measured**: output samples per second of ``sampler.sample(target, n)``, the whole call;
- **bound**: what the networks allow at the same batch size, from throughputs measured on
  the raw networks (no refine code in the loop) right before each timed run:

  ====================  ==========================================================
  none                  G forward throughput
  rs, drs               (G + D forward throughput) x accepted per proposal
  sir                   (G + D forward throughput) / candidates
  mh                    (G + D forward throughput) / k   (one output per chain)
  gradient, latent      (G + D forward-and-backward throughput) / steps
  gradient, data space  1 / (G forward time + steps x D forward-and-backward time)
  any other             (G + D forward throughput) / D evaluations per output
  ====================  ==========================================================

- **ratio** = measured / bound (per repeat, then the median), peak memory (CUDA:
  ``max_memory_allocated``; CPU: the process's peak resident set during the run, reset
  through ``/proc/self/clear_refs``, minus its size at the start), and acceptance statistics;
- **naive**: a minimal loop of the kind reference implementations use, every network call on
  a batch of one: rejection one proposal at a time (with the bound M and DRS shift of the
  batched run, so the loop skips burn-in), and every other method one output (one chain) at
  a time through the sampler itself with ``batch_size=1``. ``speedup`` = measured / naive.

Medians over ``--repeats`` runs. Sizes (batch, chains, k, steps) are per config and device
and recorded in the results; they are small on the CPU so that the whole run takes minutes.
Optional: ``--autocast bf16`` (with an accuracy check of log r against float32),
``--compile`` (``torch.compile`` on both networks), ``--fid`` (Inception feature extraction
through ``refine.metrics.inception`` against the bare network's forward throughput).

    python benchmarks/throughput.py                      # CPU, writes benchmarks/results/throughput.{md,json}
    python benchmarks/throughput.py --device cuda        # writes benchmarks/results/throughput.cuda.{md,json}
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import dataclasses
import gc
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

import refine
from refine.generator import LatentGenerator, NormalPrior
from refine.ratio import DiscriminatorRatio
from refine.samplers import SAMPLERS, get_sampler
from refine.target import LatentTarget

HERE = Path(__file__).resolve().parent
try:
    _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    _LIBC.malloc_trim  # noqa: B018  (an AttributeError here means no malloc_trim)
except (OSError, AttributeError):
    _LIBC = None

# Per config and device: batch B (proposals / chains per network call), MH length k, SIR
# candidates and gradient steps. n per method follows in method_plan.
SIZES = {
    ("mlp2d", "cpu"): dict(batch=4096, k=20, candidates=16, steps=20),
    ("dcgan32", "cpu"): dict(batch=64, k=10, candidates=8, steps=10),
    ("dcgan64", "cpu"): dict(batch=32, k=10, candidates=8, steps=10),
    ("mlp2d", "cuda"): dict(batch=65536, k=100, candidates=32, steps=100),
    ("dcgan32", "cuda"): dict(batch=4096, k=50, candidates=32, steps=50),
    ("dcgan64", "cuda"): dict(batch=2048, k=50, candidates=32, steps=50),
}


# --------------------------------------------------------------------------- networks
def build_nets(config: str, device: torch.device, seed: int = 0) -> tuple[nn.Module, nn.Module, tuple[int, ...], str]:
    """(G, D, latent shape, description) with fixed random weights (throughput does not depend on training)."""
    torch.manual_seed(seed)
    if config == "mlp2d":
        from refine.nets import build

        g = build("mlp", in_dim=2, out_dim=2, hidden=100, depth=3)
        d = build("mlp", in_dim=2, out_dim=1, hidden=100, depth=3)
        shape, desc = (2,), "MLP 2-100-100-100-2 / 2-100-100-100-1 (the DRS 2-D benchmark nets)"
    elif config in ("dcgan32", "dcgan64"):
        size = int(config[5:])
        try:
            from refine.nets import build
            from refine.nets import dcgan as _dcgan  # noqa: F401  (registers dcgan-g / dcgan-d)

            g = build("dcgan-g", image_size=size, width=64)
            d = build("dcgan-d", image_size=size, width=64)
            src = "refine.nets dcgan-g/dcgan-d"
        except ImportError:
            g, d = _inline_dcgan(size)
            src = "inline DCGAN"
        shape = (100, 1, 1)
        desc = f"DCGAN {size}px, width 64 ({src}; G {_params(g) / 1e6:.2f}M, D {_params(d) / 1e6:.2f}M parameters)"
    else:
        raise SystemExit(f"unknown config {config!r}; valid: mlp2d, dcgan32, dcgan64")
    g = g.to(device).eval().requires_grad_(False)
    d = d.to(device).eval().requires_grad_(False)
    return g, d, shape, desc


def _params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _inline_dcgan(size: int) -> tuple[nn.Module, nn.Module]:
    n_up = {32: 3, 64: 4}[size]
    ch = [64 * 2 ** (n_up - i) for i in range(n_up)]
    gl: list[nn.Module] = [nn.ConvTranspose2d(100, ch[0], 4, 1, 0, bias=False), nn.BatchNorm2d(ch[0]), nn.ReLU(True)]
    for a, b in zip(ch[:-1], ch[1:]):
        gl += [nn.ConvTranspose2d(a, b, 4, 2, 1, bias=False), nn.BatchNorm2d(b), nn.ReLU(True)]
    gl += [nn.ConvTranspose2d(ch[-1], 3, 4, 2, 1), nn.Tanh()]
    dch = [64 * 2**i for i in range(n_up)]
    dl: list[nn.Module] = [nn.Conv2d(3, dch[0], 4, 2, 1), nn.LeakyReLU(0.2, True)]
    for a, b in zip(dch[:-1], dch[1:]):
        dl += [nn.Conv2d(a, b, 4, 2, 1), nn.LeakyReLU(0.2, True)]
    dl += [nn.Conv2d(dch[-1], 1, 4, 1, 0), nn.Flatten(1)]
    return nn.Sequential(*gl), nn.Sequential(*dl)


class Autocast(nn.Module):
    """Run a network under ``torch.autocast(dtype)`` and return float32."""

    def __init__(self, net: nn.Module, device_type: str, dtype: torch.dtype) -> None:
        super().__init__()
        self.net, self.device_type, self.dtype = net, device_type, dtype

    def forward(self, x):
        with torch.autocast(self.device_type, dtype=self.dtype):
            out = self.net(x)
        return out.float()


def make_target(g, d, shape, device, *, spread: float = 1.5, seed: int = 0) -> LatentTarget:
    """A latent target whose log r has standard deviation ``spread`` over the prior.

    Random networks give nearly constant logits; a temperature scales them so that
    rejection and MH accept at rates like those of trained models (tens of percent).
    """
    gen = LatentGenerator(g, NormalPrior(shape))
    with torch.no_grad():
        z = gen.prior.sample(2048, rng=torch.Generator().manual_seed(seed + 1), device=device)
        s = torch.cat([d(g(z[i : i + 256])).flatten() for i in range(0, 2048, 256)]).double().std().item()
    temp = max(s / spread, 1e-12)
    return LatentTarget(gen, DiscriminatorRatio(d, "logit", temperature=temp))


# --------------------------------------------------------------------------- timing and memory
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Clock:
    """Seconds on the wall (after a CUDA sync) or, on a shared CPU, of this process's CPU time.

    With one torch thread, CPU time is what the computation costs even when other jobs
    share the cores (wall time then depends on their load), so ratios stay meaningful.
    """

    def __init__(self, kind: str, device: torch.device) -> None:
        self.kind, self.device = kind, device

    def __call__(self) -> float:
        sync(self.device)
        return time.process_time() if self.kind == "cpu" else time.perf_counter()


class PeakMemory:
    """Peak memory above the level at entry: CUDA allocator statistics, or the process's peak RSS
    (Linux: free heap memory is returned with malloc_trim, the high-water mark reset through
    /proc/self/clear_refs and read from /proc/self/status)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak_mb = float("nan")

    @staticmethod
    def _status(key: str) -> int:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
        raise OSError(key)

    def __enter__(self):
        self._ok = False
        if self.device.type == "cuda":
            sync(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            self._ok = True
        else:
            gc.collect()
            if _LIBC is not None:
                _LIBC.malloc_trim(0)  # hand freed heap pages back, so reused memory counts again
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")  # reset VmHWM to the current RSS
                self._base = self._status("VmRSS")
                self._ok = True
            except OSError:
                pass
        return self

    def __exit__(self, *exc):
        if not self._ok:
            return False
        if self.device.type == "cuda":
            sync(self.device)
            self.peak_mb = (torch.cuda.max_memory_allocated(self.device) - self._base) / 2**20
        else:
            self.peak_mb = (self._status("VmHWM") - self._base) / 2**20
        return False


def timed_calls(fn, clock: Clock, min_time: float, min_calls: int = 3) -> list[float]:
    """Seconds of each call of ``fn``, repeated until ``min_calls`` calls and ``min_time`` seconds."""
    times: list[float] = []
    while len(times) < min_calls or sum(times) < min_time:
        t = clock()
        fn()
        times.append(clock() - t)
    return times


def unit_rates(
    g, d, shape, device, batch: int, rng: torch.Generator, kinds: set[str], clock: Clock, min_time: float = 0.1
) -> dict[str, float]:
    """Samples per second of the raw networks at ``batch`` (median call of at least 3 calls and
    ``min_time`` seconds): G forward, G+D forward, G+D forward-and-backward to z, D
    forward-and-backward to x."""
    z = torch.randn((batch, *shape), generator=rng).to(device)
    out: dict[str, float] = {}

    def rate(fn) -> float:
        fn()  # warm
        return batch / max(statistics.median(timed_calls(fn, clock, min_time)), 1e-9)

    with torch.no_grad():
        if "g" in kinds:
            out["g"] = rate(lambda: g(z))
        if "gd" in kinds:
            out["gd"] = rate(lambda: d(g(z)))
        x = g(z) if "db" in kinds else None

    def gd_back():
        zz = z.detach().requires_grad_(True)
        with torch.enable_grad():
            (gr,) = torch.autograd.grad(d(g(zz)).sum(), zz)
        return gr

    def d_back():
        xx = x.detach().requires_grad_(True)
        with torch.enable_grad():
            (gr,) = torch.autograd.grad(d(xx).sum(), xx)
        return gr

    if "gdb" in kinds:
        out["gdb"] = rate(gd_back)
    if "db" in kinds:
        out["db"] = rate(d_back)
    return out


# --------------------------------------------------------------------------- methods
def method_plan(name: str, sz: dict) -> tuple[dict, int]:
    """Options and n for one timed run of ``name`` (rs/drs: n is refined from a warm-up's acceptance)."""
    B = sz["batch"]
    fields = {f.name for f in dataclasses.fields(SAMPLERS[name])}
    opts: dict = {}
    if "batch_size" in fields:
        opts["batch_size"] = B
    if name == "none":
        return opts, 4 * B
    if name in ("rs", "drs"):
        opts["burn_in"] = B  # one batch; the default 10000 is amortised over far larger n
        if name == "rs":
            opts["m_quantile"] = 1.0  # exact: the bound the naive loop uses
        return opts, 2 * B
    if name == "mh":
        opts["k"] = sz["k"]
        return opts, B
    if name == "sir":
        opts["candidates"] = sz["candidates"]
        return opts, max(1, 4 * (B // sz["candidates"]))
    if "steps" in fields:
        opts["steps"] = sz["steps"]
    return opts, B


def bound_of(name: str, sampler, info: dict, rates: dict[str, float]) -> tuple[float, str, float]:
    """(bound in samples/s, the formula used, the network passes per output the bound assumes)."""
    if name == "none":
        return rates["g"], "G fwd", 1.0
    if name in ("rs", "drs"):
        acc = info["accepted"] / info["proposals"]
        return rates["gd"] * acc, "G+D fwd x accepted/proposal", 1.0 / acc
    if name == "sir":
        return rates["gd"] / sampler.candidates, "G+D fwd / candidates", float(sampler.candidates)
    if name == "mh":
        return rates["gd"] / sampler.k, "G+D fwd / k", float(sampler.k)
    if getattr(sampler, "needs_gradients", False):
        steps = int(info.get("steps", getattr(sampler, "steps", 1)))
        if info.get("space") == "data":
            return 1.0 / (1.0 / rates["g"] + steps / rates["db"]), "1 / (G fwd + steps x D fwd+bwd)", float(steps)
        return rates["gdb"] / steps, "G+D fwd+bwd / steps", float(steps)
    evals = max(float(info.get("d_evals_per_sample", 1.0)), 1.0)
    return rates["gd"] / evals, "G+D fwd / reported D evals per output", evals


def passes_per_output(name: str, sampler, info: dict) -> float:
    """Network passes per output that the run actually made (the quantity the bound counts)."""
    if name == "none":
        return float(info.get("g_evals_per_sample", 1.0))
    if getattr(sampler, "needs_gradients", False):
        return float(info.get("d_backward_per_sample", info.get("d_evals_per_sample", 1.0)))
    return float(info.get("d_evals_per_sample", 1.0))


def unit_kinds(name: str, sampler, info: dict) -> set[str]:
    if name == "none":
        return {"g"}
    if getattr(sampler, "needs_gradients", False):
        return {"g", "db"} if info.get("space") == "data" else {"gdb"}
    return {"gd"}


@torch.no_grad()
def naive_rejection(
    target, info: dict, budget_s: float, rng: torch.Generator, drs: bool, eps: float, clock: Clock
) -> tuple[float, float, int]:
    """Proposals one per network call, accepted in Python, for ``budget_s`` seconds.

    Returns (outputs per second, acceptance of this loop, proposals made); the rate is
    proposals per second times the batched run's acceptance (the same M and shift)."""
    log_m = float(info["log_M"])
    shift = float(info.get("gamma_shift", 0.0))
    kept = proposals = 0
    t = clock()
    while True:
        z = target.prior.sample(1, rng=rng, device=target.device)
        lw, x = target.log_weight(z)
        d = min(float(lw) - log_m, 0.0)
        if drs:
            a = d - eps
            f = d - (math.log(-math.expm1(a)) if a > -math.log(2) else math.log1p(-math.exp(a))) - shift
            p = 1.0 / (1.0 + math.exp(-f)) if f > -700 else 0.0
        else:
            p = math.exp(d)
        proposals += 1
        if torch.rand(1, generator=rng).item() < p:
            kept += 1
        if proposals % 8 == 0 and clock() - t > budget_s:
            break
    dt = clock() - t
    return proposals / dt * (info["accepted"] / info["proposals"]), kept / proposals, proposals


def naive_generic(sampler, target, budget_s: float, rng: torch.Generator, clock: Clock) -> tuple[float, int]:
    """One output (one chain) at a time through the sampler itself, every network call on a batch
    of one, for ``budget_s`` seconds (at least one output). Returns (outputs per second, outputs)."""
    one = dataclasses.replace(sampler, batch_size=1) if hasattr(sampler, "batch_size") else sampler
    done = 0
    t = clock()
    while True:
        one.sample(target, 1, rng=rng)
        done += 1
        if clock() - t > budget_s:
            break
    return done / (clock() - t), done


def bench_method(
    name: str,
    target,
    g,
    d,
    shape,
    device,
    sz: dict,
    repeats: int,
    naive_s: float,
    clock: Clock,
    rng_device: str = "cpu",
) -> dict:
    opts, n = method_plan(name, sz)
    note = ""
    try:
        sampler = get_sampler(name, **opts)
        # Warm-up (first-call allocations, lazy initialisation), and what it tells about the plan.
        warm = sampler.sample(target, max(1, min(n, 64)), rng=torch.Generator(rng_device).manual_seed(99))
        if name in ("rs", "drs"):  # about 8 batches of proposals after the burn-in batch
            n = int(min(2 * sz["batch"], max(8, 8 * sz["batch"] * warm.info["accepted"] / warm.info["proposals"])))
        if "k_eff" in opts or (
            "k_eff" in {f.name for f in dataclasses.fields(type(sampler))}
            and sampler.k_eff is None
            and "k_eff" in warm.info
        ):
            opts["k_eff"] = float(warm.info["k_eff"])
            sampler = get_sampler(name, **opts)
            note = "k_eff fixed from a warm-up estimate (its estimate costs 2 x pairs extra G+D passes per call)"
    except Exception as e:  # a sampler whose options do not fit this plan, or that fails here
        return {"method": name, "options": opts, "n": n, "error": f"{type(e).__name__}: {str(e)[:300]}"}
    kinds = unit_kinds(name, sampler, warm.info)
    rows = []
    peak = float("nan")
    for r in range(repeats):
        # The bound is measured right before and right after the run and averaged, so that a
        # change in what else runs on the machine affects both sides of the ratio alike.
        before = unit_rates(g, d, shape, device, sz["batch"], torch.Generator().manual_seed(1000 + r), kinds, clock)
        with PeakMemory(device) as mem:
            t = clock()
            res = sampler.sample(target, n, rng=torch.Generator(rng_device).manual_seed(r))
            times = [clock() - t]
        if r == 0:
            peak = mem.peak_mb
        # The memory run starts from trimmed memory (page faults): it is the timing only when it is
        # long (>= 1 s). Shorter runs are repeated (same seed, same work), at least 3 calls and
        # 0.2 s; the median call counts.
        if times[0] < 1.0:
            times = timed_calls(
                lambda: sampler.sample(target, n, rng=torch.Generator(rng_device).manual_seed(r)), clock, 0.2, 3
            )
        dt = statistics.median(times)
        after = unit_rates(g, d, shape, device, sz["batch"], torch.Generator().manual_seed(2000 + r), kinds, clock)
        rates = {k: 2.0 / (1.0 / before[k] + 1.0 / after[k]) for k in before}
        bound, formula, ideal_passes = bound_of(name, sampler, res.info, rates)
        rows.append(
            {
                "measured": n / dt,
                "bound": bound,
                "ratio": (n / dt) / bound,
                "seconds": dt,
                "rates": rates,
                "info": res.info,
                "work": ideal_passes / passes_per_output(name, sampler, res.info),
            }
        )
    mid = sorted(range(len(rows)), key=lambda i: rows[i]["ratio"])[len(rows) // 2]
    info = rows[mid]["info"]
    out = {
        "method": name,
        "needs_gradients": bool(getattr(sampler, "needs_gradients", False)),
        "options": sampler.options(),
        "n": n,
        "bound_formula": formula,
        "measured_per_s": statistics.median(x["measured"] for x in rows),
        "bound_per_s": statistics.median(x["bound"] for x in rows),
        "ratio": statistics.median(x["ratio"] for x in rows),
        "ratio_all": [x["ratio"] for x in rows],
        "work_ratio": statistics.median(x["work"] for x in rows),
        "peak_memory_mb": peak,
        "unit_rates_per_s": {k: statistics.median(x["rates"][k] for x in rows) for k in rows[0]["rates"]},
        "acceptance_rate": info.get("acceptance_rate"),
        "ess": info.get("ess"),
        "proposals_per_sample": info.get("proposals_per_sample"),
        "g_evals_per_sample": info.get("g_evals_per_sample"),
        "d_evals_per_sample": info.get("d_evals_per_sample"),
        "note": note,
        "info": _jsonable(info),
    }
    if naive_s > 0:
        rates_n, accs, counts = [], [], []
        for r in range(repeats):
            rng = torch.Generator(rng_device).manual_seed(500 + r)
            if name in ("rs", "drs"):
                rate, acc, cnt = naive_rejection(
                    target, info, naive_s, rng, name == "drs", float(getattr(sampler, "eps", 0.0)), clock
                )
                accs.append(acc)
            else:
                rate, cnt = naive_generic(sampler, target, naive_s, rng, clock)
            rates_n.append(rate)
            counts.append(cnt)
        out["naive_per_s"] = statistics.median(rates_n)
        out["naive_count"] = counts
        out["speedup"] = out["measured_per_s"] / out["naive_per_s"]
        if accs:
            out["naive_acceptance"] = statistics.median(accs)
    return out


def _jsonable(info) -> dict:
    return json.loads(json.dumps(dict(info), default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


def noise_rate(shape, batch: int, rng_device: str, clock: Clock, calls: int = 5) -> float:
    """Latents per second that ``prior.sample`` draws on the rng's device and moves (no network):
    a ceiling on proposals per second that no batching removes."""
    prior = NormalPrior(shape)
    rng = torch.Generator(rng_device).manual_seed(0)
    dev = clock.device
    prior.sample(batch, rng=rng, device=dev)
    times = []
    for _ in range(calls):
        t = clock()
        prior.sample(batch, rng=rng, device=dev)
        times.append(clock() - t)
    return batch / max(statistics.median(times), 1e-9)


def bf16_check(target, device, batch: int) -> dict:
    """How far bf16 autocast moves log r from float32, on one batch of latents."""
    z = target.prior.sample(batch, rng=torch.Generator().manual_seed(7), device=device)
    with torch.no_grad():
        ref = target.log_weight(z)[0].double()
        with torch.autocast(device.type, dtype=torch.bfloat16):
            low = target.log_weight(z)[0].double()
    diff = (low - ref).abs()
    return {
        "max_abs_log_r_diff": float(diff.max()),
        "mean_abs_log_r_diff": float(diff.mean()),
        "log_r_std": float(ref.std()),
    }


def fid_features(device, batch: int, batches: int, clock: Clock) -> dict:
    """refine's Inception feature extraction against the bare network's forward throughput (random weights)."""
    from refine.metrics.inception import FIDInceptionV3, inception_features

    torch.manual_seed(0)
    net = FIDInceptionV3().to(device).eval().requires_grad_(False)
    imgs = torch.rand(batch * batches, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    x299 = torch.nn.functional.interpolate(
        imgs[:batch].to(device), size=(299, 299), mode="bilinear", align_corners=False
    )
    with torch.no_grad():
        trunk = nn.Sequential(
            *[
                getattr(net.net, k)
                for k in (
                    "Conv2d_1a_3x3",
                    "Conv2d_2a_3x3",
                    "Conv2d_2b_3x3",
                    "maxpool1",
                    "Conv2d_3b_1x1",
                    "Conv2d_4a_3x3",
                    "maxpool2",
                    "Mixed_5b",
                    "Mixed_5c",
                    "Mixed_5d",
                    "Mixed_6a",
                    "Mixed_6b",
                    "Mixed_6c",
                    "Mixed_6d",
                    "Mixed_6e",
                    "Mixed_7a",
                    "Mixed_7b",
                    "Mixed_7c",
                    "avgpool",
                )
            ]
        )
        trunk(x299)
        bare = []
        for _ in range(batches):
            t = clock()
            trunk(x299)
            bare.append(batch / (clock() - t))
    inception_features(net, imgs[:batch], value_range=(-1, 1), batch_size=batch, progress=False)
    t = clock()
    feats = inception_features(net, imgs, value_range=(-1, 1), batch_size=batch, progress=False)
    ours = len(imgs) / (clock() - t)
    assert feats.shape == (len(imgs), 2048)
    net_rate = statistics.median(bare)
    return {
        "batch": batch,
        "images": len(imgs),
        "bare_forward_per_s": net_rate,
        "refine_features_per_s": ours,
        "ratio": ours / net_rate,
    }


# --------------------------------------------------------------------------- report
def machine(device: torch.device) -> dict:
    m = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "refine": refine.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
    }
    if device.type == "cuda":
        m["gpu"] = torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            m["cpu"] = next(
                (ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), platform.processor()
            )
    except OSError:
        m["cpu"] = platform.processor()
    return m


def fmt(v, spec=".3g") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return format(v, spec)


def to_markdown(res: dict) -> str:
    m = res["machine"]
    lines = [
        f"# Sampler throughput against the bound ({m['device']})",
        "",
        f"Generated by `python benchmarks/throughput.py {' '.join(res['argv'])}` on {res['date']}.",
        "",
        f"Machine: {m.get('gpu', m.get('cpu'))}, {m['cpu_count']} CPU cores (torch threads: {m['torch_threads']}), "
        f"torch {m['torch']}, refine {m['refine']}. Load average at start / end: {res['load_start']} / {res['load_end']}.",
        "",
        f"Clock: {'process CPU time with one torch thread (other jobs shared the cores; CPU time is what this process used)' if res['clock'] == 'cpu' else 'wall time after a device sync'}.",
        "",
        "measured: refined samples/s of the whole `sampler.sample` call; bound: raw-network throughput at the same batch "
        "size turned into samples/s by the method's formula (see the script); ratio: measured / bound, median of "
        f"{res['repeats']} repeats (min–max in brackets); naive: one network call per sample / chain step on a batch of one; "
        "speedup: measured / naive; work: network passes per output the bound assumes / passes the run made "
        "(e.g. k / (k + 1) for MH, whose chains start with one evaluation; burn-in and the unused tail of the last batch for rs/drs): "
        "the part of the gap that is the algorithm's, not the implementation's. Peak memory: "
        + (
            "CUDA allocated above the level at entry."
            if m["device"].startswith("cuda")
            else "peak resident set of the process during the first run minus its size at the start (freed heap returned first)."
        ),
        "",
    ]
    for cfg in res["configs"]:
        lines += [
            f"## {cfg['name']}: {cfg['description']}",
            "",
            f"Sizes: {json.dumps(cfg['sizes'])}. Latent noise alone (drawn on the "
            f"{cfg['rng_device']} generator and moved): {cfg['latent_noise_per_s']:.3g} latents/s.",
            "",
        ]
        lines += [
            "| method | grad | n | measured /s | bound /s | ratio | work | formula | peak MB | acceptance | naive /s | speedup |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in cfg["methods"]:
            if "error" in r:
                lines.append(f"| {r['method']} | | | error: {r['error'][:120]} | | | | | | | | |")
                continue
            acc = r.get("acceptance_rate")
            acc_s = fmt(acc) if acc is not None else (f"ess {fmt(r['ess'])}" if r.get("ess") is not None else "–")
            rng_s = f"{fmt(min(r['ratio_all']), '.2f')}–{fmt(max(r['ratio_all']), '.2f')}"
            lines.append(
                f"| {r['method']} | {'yes' if r['needs_gradients'] else 'no'} | {r['n']} | {fmt(r['measured_per_s'], '.4g')} | "
                f"{fmt(r['bound_per_s'], '.4g')} | {fmt(r['ratio'], '.2f')} ({rng_s}) | {fmt(r['work_ratio'], '.2f')} | {r['bound_formula']} | {fmt(r['peak_memory_mb'], '.1f')} | "
                f"{acc_s} | {fmt(r.get('naive_per_s'), '.3g')} | {fmt(r.get('speedup'), '.1f')}x |"
            )
        notes = [f"{r['method']}: {r['note']}" for r in cfg["methods"] if r.get("note")]
        if notes:
            lines += [""] + [f"- {x}" for x in notes]
        if cfg.get("bf16"):
            b = cfg["bf16"]
            lines += [
                "",
                f"bf16 autocast: max |Δ log r| = {b['max_abs_log_r_diff']:.3g}, mean {b['mean_abs_log_r_diff']:.3g} "
                f"(log r std {b['log_r_std']:.3g}).",
            ]
        lines.append("")
    if res.get("fid"):
        f = res["fid"]
        lines += [
            "## FID feature extraction",
            "",
            f"FID Inception (random weights) on {f['images']} 32-px images, batch {f['batch']}: bare forward at 299 px "
            f"{f['bare_forward_per_s']:.3g} images/s, `refine.metrics.inception.inception_features` (value mapping, resize, "
            f"forward, collection) {f['refine_features_per_s']:.3g} images/s: ratio {f['ratio']:.2f}.",
            "",
        ]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    ap.add_argument("--configs", default="mlp2d,dcgan32", help="comma-separated: mlp2d, dcgan32, dcgan64")
    ap.add_argument("--methods", default=None, help="comma-separated sampler names (default: every registered sampler)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=None, help="override the batch size of every config")
    ap.add_argument(
        "--naive-seconds",
        type=float,
        default=None,
        help="time given to each naive loop per repeat (default 0.5 s on the CPU, 5 s on CUDA; 0 skips them)",
    )
    ap.add_argument("--autocast", choices=["none", "bf16"], default="none", help="run G and D under bf16 autocast")
    ap.add_argument("--compile", action="store_true", help="torch.compile G and D")
    ap.add_argument("--fid", action="store_true", help="also time Inception feature extraction")
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (default on the CPU: 1, so that CPU time measures the work)",
    )
    ap.add_argument(
        "--clock",
        choices=["auto", "cpu", "wall"],
        default="auto",
        help="cpu: process CPU time (default on the CPU: robust when other jobs share the cores); wall: elapsed time (default on CUDA)",
    )
    ap.add_argument(
        "--rng-device",
        default="cpu",
        help="device of the samplers' torch.Generator (cpu, as the CLI uses; cuda draws the noise on the GPU)",
    )
    ap.add_argument("--out", default=None, help="output stem (default benchmarks/results/throughput[.cuda])")
    ap.add_argument(
        "--markdown-from", default=None, metavar="JSON", help="only rewrite the markdown of an earlier run's JSON"
    )
    args = ap.parse_args(argv)

    if args.markdown_from:
        src = Path(args.markdown_from)
        from refine.io import atomic_write

        with atomic_write(src.with_suffix(".md"), "w") as f:
            f.write(to_markdown(json.loads(src.read_text())))
        print(f"wrote {src.with_suffix('.md')}")
        return 0
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but no CUDA GPU is available", file=sys.stderr)
        return 2
    if args.threads or device.type == "cpu":
        torch.set_num_threads(args.threads or 1)
    clock_kind = args.clock if args.clock != "auto" else ("cpu" if device.type == "cpu" else "wall")
    clock = Clock(clock_kind, device)
    naive_s = args.naive_seconds if args.naive_seconds is not None else (0.5 if device.type == "cpu" else 5.0)
    names = args.methods.split(",") if args.methods else list(SAMPLERS)
    unknown = [m for m in names if m not in SAMPLERS]
    if unknown:
        print(f"error: unknown method(s) {', '.join(unknown)}; registered: {', '.join(SAMPLERS)}", file=sys.stderr)
        return 2
    stem = (
        Path(args.out) if args.out else HERE / "results" / ("throughput" if device.type == "cpu" else "throughput.cuda")
    )
    res = {
        "argv": list(argv if argv is not None else sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine(device),
        "repeats": args.repeats,
        "clock": clock_kind,
        "load_start": _load(),
        "configs": [],
    }
    t_all = time.perf_counter()
    for cfg in args.configs.split(","):
        sz = dict(SIZES[(cfg, device.type)])
        if args.batch:
            sz["batch"] = args.batch
        g, d, shape, desc = build_nets(cfg, device)
        if args.autocast == "bf16":
            g, d = Autocast(g, device.type, torch.bfloat16), Autocast(d, device.type, torch.bfloat16)
            desc += ", bf16 autocast"
        if args.compile:
            g, d = torch.compile(g), torch.compile(d)
            desc += ", torch.compile"
        target = make_target(g, d, shape, device)
        entry = {
            "name": cfg,
            "description": desc,
            "sizes": sz,
            "rng_device": args.rng_device,
            "methods": [],
            "latent_noise_per_s": noise_rate(shape, sz["batch"], args.rng_device, clock),
        }
        if args.autocast == "bf16":
            g32, d32, _, _ = build_nets(cfg, device)
            entry["bf16"] = bf16_check(make_target(g32, d32, shape, device), device, min(sz["batch"], 4096))
        for name in names:
            t0 = time.perf_counter()
            row = bench_method(name, target, g, d, shape, device, sz, args.repeats, naive_s, clock, args.rng_device)
            row["bench_seconds"] = time.perf_counter() - t0
            entry["methods"].append(row)
            msg = row.get("error") or (
                f"{row['measured_per_s']:.4g}/s vs bound {row['bound_per_s']:.4g}/s = {row['ratio']:.2f}"
                + (f", naive {row['naive_per_s']:.3g}/s, speedup {row['speedup']:.1f}x" if "speedup" in row else "")
            )
            print(f"[{cfg}] {name:7s} {msg}  ({row['bench_seconds']:.0f}s)", flush=True)
        res["configs"].append(entry)
    if args.fid:
        res["fid"] = fid_features(
            device, batch=8 if device.type == "cpu" else 200, batches=2 if device.type == "cpu" else 10, clock=clock
        )
        print(f"[fid] {res['fid']}", flush=True)
    res["load_end"] = _load()
    res["total_seconds"] = time.perf_counter() - t_all
    stem.parent.mkdir(parents=True, exist_ok=True)
    from refine.io import atomic_write, write_json

    write_json(res, stem.with_name(stem.name + ".json"))
    with atomic_write(stem.with_name(stem.name + ".md"), "w") as f:
        f.write(to_markdown(res))
    print(f"wrote {stem}.json and {stem}.md in {res['total_seconds']:.0f}s")
    return 0


def _load() -> str:
    try:
        return " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


if __name__ == "__main__":
    sys.exit(main())
