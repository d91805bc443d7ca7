"""The record of finished trials, written after every trial, so an interrupted tune loses nothing.

A journal is one JSON file: the tune's fingerprint (everything that decides its result:
inputs, budget, samples, search sizes, seed, scorer) and the finished trials by key.
Every trial is seeded from the tune's seed and its key alone, so a resumed tune that
skips the recorded trials reaches the same result as one that never stopped; a journal
whose fingerprint differs from the tune's is refused rather than mixed in.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import ConfigError
from ..fs import write_json

__all__ = ["Journal", "JOURNAL_FORMAT"]

JOURNAL_FORMAT = "refine.tune-trials"


class Journal:
    """Finished trials by key; ``path=None`` keeps them in memory only."""

    def __init__(self, path: str | Path | None, fingerprint: dict, *, resume: bool = False) -> None:
        self.path = None if path is None else Path(path)
        self.fingerprint = json.loads(json.dumps(fingerprint, default=str))  # as it reads back from the file
        self.trials: dict[str, dict] = {}
        self.resumed = 0
        if self.path is None or not self.path.exists():
            return
        if not resume:
            raise ConfigError(
                f"{self.path} holds the trials of an earlier tune; pass --resume (resume=True) to continue it, "
                "or choose another output folder"
            )
        try:
            saved = json.loads(self.path.read_text())
        except (OSError, ValueError) as e:
            raise ConfigError(
                f"{self.path} cannot be read as a tune journal ({str(e).splitlines()[0][:80]}); delete it to start afresh"
            ) from None
        if (
            not isinstance(saved, dict)
            or saved.get("format") != JOURNAL_FORMAT
            or not isinstance(saved.get("trials"), dict)
        ):
            raise ConfigError(f"{self.path} is not a tune journal (format {JOURNAL_FORMAT}); delete it to start afresh")
        if saved.get("fingerprint") != self.fingerprint:
            diff = sorted(
                k
                for k in set(self.fingerprint) | set(saved.get("fingerprint") or {})
                if (saved.get("fingerprint") or {}).get(k) != self.fingerprint.get(k)
            )
            raise ConfigError(
                f"--resume: {self.path} was written by a tune with other settings ({', '.join(diff)} differ); "
                "rerun with the same settings, or choose another output folder"
            )
        self.trials = dict(saved["trials"])
        self.resumed = len(self.trials)

    def get(self, key: str) -> dict | None:
        return self.trials.get(key)

    def add(self, key: str, trial: dict) -> None:
        self.trials[key] = trial
        self.save()

    def save(self) -> None:
        if self.path is not None:
            write_json({"format": JOURNAL_FORMAT, "fingerprint": self.fingerprint, "trials": self.trials}, self.path)
