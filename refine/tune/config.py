"""The config file of a tuned setting, and its replay by ``refine sample --config FILE``.

A config names everything ``refine sample`` needs to draw exactly the samples the tune
scored on the test split: the method, its options, the generator and ratio files (with
their sha256, checked on replay), the foreign-network flags they were loaded with, and
the seed. A critic's tuned temperature travels in a ratio file the tune writes next to
the config (or, for a foreign ``--disc``, as its ``--disc-temperature``). The scores and
the cost the tune measured ride along for the reader; replay ignores them.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..fs import file_sha256, write_json
from ..samplers import get_sampler, parse_options
from ..validate import MAX_SEED, as_int

__all__ = ["CONFIG_FORMAT", "make_config", "write_config", "load_config", "replay_config", "Replay"]

CONFIG_FORMAT = "refine.tune-config"
CONFIG_VERSION = 1


def _file(path: str | Path | None) -> dict | None:
    if path is None:
        return None
    p = Path(path).expanduser().resolve()
    return {"path": str(p), "sha256": file_sha256(p)}


def make_config(
    *,
    method: str,
    options: dict,
    seed: int,
    checkpoint: str | Path | None,
    ratio: str | Path | None,
    foreign: dict | None = None,
    scores: dict | None = None,
) -> dict:
    """The config of one setting; ``checkpoint=None`` is refine's shipped default GAN; ``foreign``: non-default foreign flags."""
    get_sampler(method, **options)  # the options must be valid for the method
    return {
        "format": CONFIG_FORMAT,
        "version": CONFIG_VERSION,
        "method": method,
        "options": dict(options),
        "seed": as_int(seed, "seed", minimum=0, maximum=MAX_SEED),
        "checkpoint": _file(checkpoint),
        "ratio": _file(ratio),
        "foreign": dict(foreign or {}),
        "tuned": dict(scores or {}),
    }


def write_config(cfg: dict, path: str | Path) -> Path:
    write_json(cfg, path)
    return Path(path)


def load_config(path: str | Path) -> dict:
    """Read and check a config file: format, method, options and seed; a ConfigError names what is wrong."""
    path = Path(path)
    try:
        cfg = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"--config {path}: no such file; pass the config.json that `refine tune` wrote") from None
    except (OSError, ValueError) as e:
        raise ConfigError(
            f"--config {path} is not a JSON file ({str(e).splitlines()[0][:80]}); pass the config.json that `refine tune` wrote"
        ) from None
    if not isinstance(cfg, dict) or cfg.get("format") != CONFIG_FORMAT:
        raise ConfigError(
            f"--config {path} is not a tune config (format {CONFIG_FORMAT!r}); pass the config.json that `refine tune` wrote"
        )
    if cfg.get("version") != CONFIG_VERSION:
        raise ConfigError(
            f"--config {path} has version {cfg.get('version')!r}; this refine reads version {CONFIG_VERSION}"
        )
    if not isinstance(cfg.get("method"), str) or not isinstance(cfg.get("options"), dict):
        raise ConfigError(f"--config {path}: 'method' must be a name and 'options' a mapping")
    get_sampler(cfg["method"], **cfg["options"])
    cfg["seed"] = as_int(cfg.get("seed"), f"--config {path}: seed", minimum=0, maximum=MAX_SEED)
    for key in ("checkpoint", "ratio"):
        entry = cfg.get(key)
        if entry is not None and not (
            isinstance(entry, dict) and isinstance(entry.get("path"), str) and isinstance(entry.get("sha256"), str)
        ):
            raise ConfigError(f"--config {path}: '{key}' must be null or {{path, sha256}}")
    if not isinstance(cfg.get("foreign", {}), dict):
        raise ConfigError(f"--config {path}: 'foreign' must be a mapping of flags")
    return cfg


def _checked_file(entry: dict | None, what: str, config: Path) -> Path | None:
    if entry is None:
        return None
    p = Path(entry["path"])
    if not p.is_file():
        raise ConfigError(f"--config {config}: its {what} {p} is missing; restore the file, or tune again")
    if file_sha256(p) != entry["sha256"]:
        raise ConfigError(
            f"--config {config}: its {what} {p} has changed since the tune (sha256 differs); tune again for the new file"
        )
    return p


def _explicit(name: str, value: Any, default: Any) -> bool:
    """Whether the user gave ``name`` on the command line (outside a CLI: whether it differs from the default)."""
    import click

    ctx = click.get_current_context(silent=True)
    if ctx is not None and name in ctx.params:
        src = ctx.get_parameter_source(name)
        return src is not None and src.name in ("COMMANDLINE", "ENVIRONMENT")
    return value != default


@dataclass
class Replay:
    """What ``refine sample`` runs for a config: its arguments filled in, and the record for run.json."""

    method: str
    option: list[str]
    ckpt: Path | None
    ratio: Path | None
    seed: int
    foreign: Any
    record: dict


def replay_config(
    path: str | Path, *, method: str, option: list[str], ckpt: Path | None, ratio: Path | None, seed: int, foreign=None
) -> Replay:
    """Fill ``refine sample``'s method, options, checkpoint, ratio, seed and foreign flags from the config at ``path``.

    An argument the user also gave must agree with the config (a one-line ConfigError
    otherwise); the files the config names must be unchanged (sha256).
    """
    path = Path(path)
    cfg = load_config(path)
    clash = []
    if _explicit("method", method, "none") and method != cfg["method"]:
        clash.append(f"--method {method} (config: {cfg['method']})")
    if _explicit("seed", seed, 0) and int(seed) != cfg["seed"]:
        clash.append(f"--seed {seed} (config: {cfg['seed']})")
    given = parse_options(option)
    if given:
        want = get_sampler(cfg["method"], **cfg["options"]).options()
        have = get_sampler(cfg["method"], **{**cfg["options"], **given}).options()
        clash += [f"-o {k}={given[k]} (config: {want[k]})" for k in given if have[k] != want[k]]
    ck = _checked_file(cfg["checkpoint"], "checkpoint", path)
    rt = _checked_file(cfg["ratio"], "ratio", path)
    if ckpt is not None and (ck is None or Path(ckpt).resolve() != ck):
        clash.append(f"--ckpt {ckpt} (config: {ck or 'the shipped default'})")
    if ratio is not None and (rt is None or Path(ratio).resolve() != rt):
        clash.append(f"--ratio {ratio} (config: {rt or 'none'})")
    flags = dict(cfg.get("foreign") or {})
    if foreign is not None:
        defaults = type(foreign)()
        for f in dataclasses.fields(foreign):
            mine = getattr(foreign, f.name)
            if mine != getattr(defaults, f.name) and str(mine) != str(flags.get(f.name, getattr(defaults, f.name))):
                clash.append(f"--{f.name.replace('_', '-')} {mine} (config: {flags.get(f.name, 'not set')})")
        unknown = sorted(set(flags) - {f.name for f in dataclasses.fields(foreign)})
        if unknown:
            raise ConfigError(f"--config {path}: unknown foreign flags {', '.join(unknown)}")
        foreign = dataclasses.replace(
            foreign, **{k: (Path(v) if k == "disc" and v is not None else v) for k, v in flags.items()}
        )
    if clash:
        raise ConfigError(
            f"--config {path} sets the method, options, files and seed; these arguments disagree with it: {'; '.join(clash)}. "
            "Drop them, or tune again"
        )
    opts = [f"{k}={v}" for k, v in cfg["options"].items()]
    record = {"path": str(path.resolve()), "sha256": file_sha256(path)}
    return Replay(cfg["method"], opts, ck, rt, cfg["seed"], foreign, record)
