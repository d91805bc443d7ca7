"""Training checkpoints survive interrupts and resume exactly.

- Every registered training method, resumed from a checkpoint on disk, ends bit-identical to a
  run that was never interrupted: networks, optimizer moments and step counts, the rng state,
  the epoch counter and the loss history.
- ``refine train`` interrupted by Ctrl-C (a KeyboardInterrupt) in the middle of an epoch leaves
  the last periodic checkpoint intact and says how to continue; ``--resume`` then finishes the
  run with the same result as an uninterrupted one.
- An interrupt while a checkpoint is being written leaves the previous file byte for byte and
  no temporary file.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from refine.cli import app
from refine.errors import CheckpointError
from refine.io import load_gan, safe_load
from refine.train import list_methods
from refine.train.checkpointing import read_training_state, restore_training_state, training_state
from refine.train.toy2d import save_toy_checkpoint, train_toy

TINY = dict(n_train=512, batch_size=128, hidden=8, depth=2, init_seed=3)
CLI_TINY = [
    "--n-train",
    "1024",
    "--batch-size",
    "256",
    "--hidden",
    "8",
    "--seed",
    "5",
    "--device",
    "cpu",
    "--no-progress",
]
STEPS_PER_EPOCH = 1024 // 256


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny networks train fastest on one thread (and two threads spin against each other on a busy machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def assert_same(a, b, path="state"):
    """Nested dicts / lists / tensors equal bit for bit (tensors) or exactly (plain values)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        assert isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor), path
        assert a.dtype == b.dtype and torch.equal(a, b), path
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(map(str, a)) == set(map(str, b)), (
            path,
            sorted(map(str, a)),
            sorted(map(str, b)),
        )
        bs = {str(k): v for k, v in b.items()}
        for k, v in a.items():
            assert_same(v, bs[str(k)], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]")
    else:
        assert a == b, (path, a, b)


def _final_state(method: str, epochs: int, *, resume=None, save_at: dict | None = None) -> dict:
    """Train ``method`` to ``epochs``; returns the training state after the last epoch (and writes
    checkpoints for the epochs in ``save_at``: {epoch: path})."""
    rng = torch.Generator().manual_seed(11)
    out = {}

    def on_epoch(epoch, run, trainer):
        state = training_state(trainer, epoch=epoch, rng=rng, history=run.meta["history"])
        if save_at and epoch in save_at:
            save_toy_checkpoint(save_at[epoch], run, train_state=state)
        if epoch == epochs:
            out["state"] = state

    train_toy("grid25", epochs=epochs, method=method, rng=rng, resume=resume, on_epoch=on_epoch, **TINY)
    return out["state"]


@pytest.mark.parametrize("method", list_methods())
def test_every_method_resumes_bit_identically(method, tmp_path):
    ckpt = tmp_path / "epoch1.pt"
    straight = _final_state(method, 3)
    _final_state(method, 1, save_at={1: ckpt})
    _, state = read_training_state(ckpt)  # through the file: plain values, weights_only load
    assert state["epoch"] == 1 and len(state["history"]) == 1
    resumed = _final_state(method, 3, resume=state)
    assert resumed["epoch"] == 3
    assert [h["epoch"] for h in resumed["history"]] == [1, 2, 3]
    # networks, optimizer moments and step counts, rng state and losses all match the uninterrupted run
    assert_same(straight, resumed)
    assert resumed["optimizers"] != {}, "the method's optimizers are part of its state"


def test_restore_refuses_a_state_for_another_method(tmp_path):
    ckpt = tmp_path / "gan.pt"
    _final_state("gan", 1, save_at={1: ckpt})
    _, state = read_training_state(ckpt)
    with pytest.raises(CheckpointError, match="resume with the method"):
        _final_state("veegan", 2, resume=state)


def test_restore_does_not_alias_the_callers_state(tmp_path):
    """Training after a restore must not update the state dict it was restored from (CPU tensors are not copied by load_state_dict)."""
    ckpt = tmp_path / "gan.pt"
    _final_state("gan", 1, save_at={1: ckpt})
    _, state = read_training_state(ckpt)
    _, again = read_training_state(ckpt)
    _final_state("gan", 2, resume=state)
    assert_same(state, again)


# ----------------------------------------------------------------------------- the CLI, interrupted
def _interrupt_at_step(monkeypatch, n: int):
    """Make the n-th training step (1-based, over the whole run) raise KeyboardInterrupt, as Ctrl-C would."""
    from refine.train.gan import GAN

    original = GAN.step
    calls = {"n": 0}

    def step(self, real, *, rng=None):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
        return original(self, real, rng=rng)

    monkeypatch.setattr(GAN, "step", step)
    return calls


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_ctrl_c_mid_epoch_keeps_the_last_checkpoint_and_resume_finishes_the_run(tmp_path, monkeypatch):
    runner = CliRunner()
    ref = tmp_path / "ref" / "gan.pt"
    res = runner.invoke(app, ["train", "--epochs", "4", "--out", str(ref), *CLI_TINY])
    assert res.exit_code == 0, res.output

    out = tmp_path / "run" / "gan.pt"
    calls = _interrupt_at_step(monkeypatch, 2 * STEPS_PER_EPOCH + 2)  # in the middle of epoch 3
    res = runner.invoke(app, ["train", "--epochs", "4", "--every", "1", "--out", str(out), *CLI_TINY])
    monkeypatch.undo()
    assert calls["n"] == 2 * STEPS_PER_EPOCH + 2
    assert res.exit_code == 130
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in res.output, res.output
    assert "epoch 2" in lines[0] and f"--resume {out}" in lines[0]
    assert _files(out.parent) == ["gan.pt"]  # no temporary file left behind

    # The checkpoint is the intact state after epoch 2: loadable for sampling, and resumable.
    assert load_gan(out).generator is not None
    _, state = read_training_state(out)
    assert state["epoch"] == 2 and [h["epoch"] for h in state["history"]] == [1, 2]

    res = runner.invoke(
        app, ["train", "--resume", str(out), "--epochs", "4", "--out", str(out), "--no-progress", "--device", "cpu"]
    )
    assert res.exit_code == 0, res.output
    assert "resumed at epoch 2" in res.output
    a, b = safe_load(out), safe_load(ref)
    for part in ("generator", "discriminator"):
        assert_same(a[part]["state"], b[part]["state"], part)
    sa, sb = a["extra"]["train_state"], b["extra"]["train_state"]
    assert sa["epoch"] == sb["epoch"] == 4
    assert_same(sa, sb)  # optimizers, rng state, history
    assert a["meta"]["history"] == b["meta"]["history"]


def test_ctrl_c_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    out = tmp_path / "gan.pt"
    real_save = torch.save
    seen = {"saves": 0, "before": None}

    def save(obj, f, *args, **kwargs):
        seen["saves"] += 1
        if seen["saves"] == 3:  # the checkpoint after epoch 3: half-write it, then Ctrl-C
            seen["before"] = out.read_bytes()
            f.write(b"PK\x03\x04 half a checkpoint")
            raise KeyboardInterrupt
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    res = CliRunner().invoke(app, ["train", "--epochs", "4", "--every", "1", "--out", str(out), *CLI_TINY])
    monkeypatch.undo()
    assert res.exit_code == 130 and "Traceback" not in res.output
    assert seen["before"] is not None and out.read_bytes() == seen["before"]
    assert _files(tmp_path) == ["gan.pt"]
    _, state = read_training_state(out)
    assert state["epoch"] == 2


def test_ctrl_c_before_the_first_checkpoint_leaves_nothing(tmp_path, monkeypatch):
    out = tmp_path / "new" / "gan.pt"
    _interrupt_at_step(monkeypatch, 2)
    res = CliRunner().invoke(app, ["train", "--epochs", "3", "--out", str(out), *CLI_TINY])
    assert res.exit_code == 130 and "nothing was written" in res.output
    assert not out.parent.exists()


def test_every_zero_writes_only_the_final_checkpoint(tmp_path, monkeypatch):
    out = tmp_path / "gan.pt"
    writes = []
    real_save = torch.save
    monkeypatch.setattr(torch, "save", lambda obj, f, *a, **k: (writes.append(1), real_save(obj, f, *a, **k))[1])
    res = CliRunner().invoke(app, ["train", "--epochs", "3", "--every", "0", "--out", str(out), *CLI_TINY])
    assert res.exit_code == 0, res.output
    assert len(writes) == 1
    assert read_training_state(out)[1]["epoch"] == 3


def test_a_finished_run_can_be_extended(tmp_path):
    """Resuming a finished checkpoint with a larger --epochs equals training that long in one go."""
    runner = CliRunner()
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    assert runner.invoke(app, ["train", "--epochs", "1", "--every", "0", "--out", str(a), *CLI_TINY]).exit_code == 0
    assert (
        runner.invoke(
            app, ["train", "--resume", str(a), "--epochs", "2", "--out", str(a), "--no-progress", "--device", "cpu"]
        ).exit_code
        == 0
    )
    assert runner.invoke(app, ["train", "--epochs", "2", "--out", str(b), *CLI_TINY]).exit_code == 0
    assert_same(safe_load(a)["extra"]["train_state"], safe_load(b)["extra"]["train_state"])


def test_restore_into_fresh_method_directly():
    """The state can be restored without a file: restore_training_state returns the epoch and history."""
    rng = torch.Generator().manual_seed(0)
    captured = {}

    def on_epoch(epoch, run, trainer):
        captured["state"] = training_state(trainer, epoch=epoch, rng=rng, history=run.meta["history"])
        captured["trainer"] = trainer

    train_toy("grid25", epochs=2, method="gan", rng=rng, on_epoch=on_epoch, **TINY)
    other = torch.Generator().manual_seed(99)
    epoch, history = restore_training_state(captured["trainer"], captured["state"], rng=other)
    assert epoch == 2 and [h["epoch"] for h in history] == [1, 2]
    assert torch.equal(other.get_state(), rng.get_state())
