"""Generated hostile input: the README's guarantees, checked on cases nobody listed by hand.

Hypothesis (seeded: ``derandomize=True``) generates command lines, checkpoint mutations and
sample-file mutations. For every case the CLI must

* exit with code 0 or 2, never with a traceback;
* on code 2: print exactly one non-empty line, ``error: ...``, and leave every file and folder
  outside a fresh output folder as it was (the fresh folder itself is gone again);
* on code 0: leave a complete set in the output folder (``run.json`` listing its files, finite
  samples of the requested count).

Cases built to be invalid (a bad ``-n``, seed, method, option name or value, a truncated or
forged file) must take the code-2 branch. The default run tries a few hundred cases; the ``slow``
run (``pytest -m slow``) more than a thousand. Further tests: a finished run survives any failed
run into its folder byte for byte, and a folder another run is writing is refused.
"""

from __future__ import annotations

import io
import json
import math
import os
import shlex
import subprocess
import sys
import traceback
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from refine.cli import app
from refine.generator import NormalPrior
from refine.io import save_discriminator_ratio, save_gan
from refine.nets import arch_config, build_from_config
from refine.outputs import RunFolder, remove_if_unused
from refine.ratio import DiscriminatorRatio
from refine.samplers import SAMPLERS, sampler_options
from refine.validate import MAX_SAMPLES, MAX_SEED

G_ARCH = arch_config("mlp", in_dim=2, out_dim=2, hidden=8, depth=1)
D_ARCH = arch_config("mlp", in_dim=2, out_dim=1, hidden=8, depth=1)
#: proposal methods are cheap at n=20; gradient methods run 2 steps so a valid case stays quick
METHODS = {
    "none": [],
    "rs": ["burn_in=200"],
    "drs": ["burn_in=200"],
    "sir": ["candidates=4"],
    "mh": ["k=4"],
    "ddls": ["steps=2"],
    "dgflow": ["steps=2"],
    "dot": ["steps=2", "pairs=10"],
    "dcd": ["steps=2"],
}
DEFAULT_CASES = 150
SLOW_CASES = 400


def _settings(n: int):
    return settings(
        max_examples=n,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        g, d = build_from_config(G_ARCH), build_from_config(D_ARCH)
    save_gan(
        root / "gan.pt",
        generator=g,
        generator_arch=G_ARCH,
        prior=NormalPrior((2,)),
        discriminator=d,
        discriminator_arch=D_ARCH,
        meta={"dataset": "grid25"},
    )
    save_discriminator_ratio(root / "ratio.pt", DiscriminatorRatio(d), D_ARCH)
    x = np.random.default_rng(0).normal(size=(200, 2)).astype(np.float32)
    np.savez(root / "samples.npz", x=x)
    return {"root": root, "gan": root / "gan.pt", "ratio": root / "ratio.pt", "samples": root / "samples.npz"}


def _snapshot(top: Path) -> dict:
    snap = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            full = Path(dirpath) / name
            st_ = full.lstat()
            snap[str(full)] = (st_.st_size if full.is_file() else -1, st_.st_mtime_ns)
    return snap


#: ``benchmarks/reliability.py`` sets this to a file and counts the outcomes written there.
_LOG = os.environ.get("REFINE_HOSTILE_LOG")


def _log(kind: str, code: int) -> None:
    if _LOG:
        with open(_LOG, "a") as f:
            f.write(
                json.dumps(
                    {"test": os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0], "kind": kind, "exit": code}
                )
                + "\n"
            )


def _run(argv: list[str], *, watch: Path, out: Path, n: int | None = None, must_fail: bool) -> int:
    """Run the CLI in-process and check the contract; return its exit code."""
    assert not out.exists()
    before = _snapshot(watch)
    res = CliRunner().invoke(app, argv)
    text = res.output
    assert "Traceback" not in text, text
    if not (isinstance(res.exception, SystemExit) or res.exception is None):
        raise AssertionError(
            f"{shlex.join(argv)[-300:]}: " + "".join(traceback.format_exception(res.exception))[-1500:]
        )
    assert res.exit_code in (0, 2), (argv, res.exit_code, text)
    if res.exit_code == 2:
        lines = [ln for ln in text.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), (argv, text)
        assert not out.exists(), f"a failed run left {sorted(p.name for p in out.iterdir())} in a fresh folder"
        assert _snapshot(watch) == before, "a failed run changed files outside its output folder"
    else:
        assert not must_fail, f"a case built to be invalid ran: {shlex.join(argv)}"
        record = json.loads((out / "run.json").read_text())
        assert sorted(record["files"]) == sorted(p.name for p in out.iterdir() if p.name != "run.json")
        if "samples.npz" in record["files"]:
            with np.load(out / "samples.npz") as f:
                assert np.isfinite(f["x"]).all()
                if n is not None:
                    assert len(f["x"]) == n
    _log(argv[0], res.exit_code)
    return res.exit_code


# --------------------------------------------------------------------------- command lines
_TEXT = st.text(alphabet=st.characters(codec="ascii", exclude_characters="\x00"), min_size=1, max_size=12)


def _not_int(s: str) -> bool:
    try:
        int(s.strip())
    except ValueError:
        return True
    return False


def _not_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return s.strip().lower() not in ("true", "false", "none", "null", "")
    return False


bad_n = st.one_of(
    st.integers(max_value=0), st.integers(min_value=MAX_SAMPLES + 1, max_value=10**30), _TEXT.filter(_not_int)
).map(str)
bad_seed = st.one_of(
    st.integers(max_value=-1), st.integers(min_value=MAX_SEED + 1, max_value=2**80), _TEXT.filter(_not_int)
).map(str)
bad_method = _TEXT.filter(lambda s: s.strip() not in SAMPLERS and not s.startswith("-"))


@st.composite
def bad_option(draw, method: str):
    """A ``key=value`` that is wrong for ``method``: an unknown key, or a known key with a value of
    the wrong type, negative, NaN or infinite. Returns (text, must_fail)."""
    opts = {o["name"]: o for o in sampler_options(method)}
    kind = draw(st.sampled_from(["unknown-key", "value"] if opts else ["unknown-key"]))
    if kind == "unknown-key":
        key = draw(st.from_regex(r"[a-z][a-z_]{0,10}", fullmatch=True).filter(lambda k: k not in opts))
        return f"{key}={draw(st.integers(0, 9))}", True
    key = draw(st.sampled_from(sorted(opts)))
    typ = str(opts[key].get("type", ""))
    if "int" in typ:
        value = draw(
            st.one_of(st.integers(max_value=-1).map(str), st.sampled_from(["nan", "inf", "1.5", "ten", "1e400"]))
        )
        return f"{key}={value}", True
    if "float" in typ:
        value = draw(st.one_of(st.sampled_from(["nan", "inf", "-inf", "NaN", "-1e400"]), _TEXT.filter(_not_number)))
        return f"{key}={value}", True
    return f"{key}={draw(_TEXT.filter(lambda s: '=' not in s))}", False  # choices and flags: may hit a valid spelling


@st.composite
def hostile_sample_line(draw):
    method = draw(st.sampled_from(sorted(METHODS)))
    argv = {"-n": "20", "--seed": "0", "-m": method}
    options = list(METHODS[method])
    must_fail = False
    for what in draw(
        st.lists(st.sampled_from(["n", "seed", "method", "option", "device"]), min_size=1, max_size=3, unique=True)
    ):
        if what == "n":
            argv["-n"] = draw(bad_n)
        elif what == "seed":
            argv["--seed"] = draw(bad_seed)
        elif what == "method":
            argv["-m"] = draw(bad_method)
        elif what == "device":
            argv["--device"] = draw(_TEXT.filter(lambda s: s not in ("cpu", "auto") and not s.startswith("-")))
        else:
            text, fails = draw(bad_option(method))
            options.append(text)
            must_fail = must_fail or fails
            continue
        must_fail = True
    return argv, options, must_fail


def _sample_argv(world, out: Path, argv: dict, options: list[str]) -> list[str]:
    line = ["sample", "--no-progress", "--ckpt", str(world["gan"]), "--ratio", str(world["ratio"]), "--out", str(out)]
    if "--device" not in argv:
        line += ["--device", "cpu"]
    for k, v in argv.items():
        line += [k, v]
    for o in options:
        line += ["-o", o]
    return line


def _check_lines(world, tmp_path_factory, case):
    argv, options, must_fail = case
    work = tmp_path_factory.mktemp("case")
    out = work / "fresh" / "out"
    n = int(argv["-n"]) if not _not_int(argv["-n"]) else None
    _run(_sample_argv(world, out, argv, options), watch=world["root"], out=out, n=n, must_fail=must_fail)
    assert not (work / "fresh").exists(), "a failed run left the folders it created"


@given(case=hostile_sample_line())
@_settings(DEFAULT_CASES)
def test_generated_command_lines(world, tmp_path_factory, case):
    _check_lines(world, tmp_path_factory, case)


@pytest.mark.slow
@given(case=hostile_sample_line())
@_settings(SLOW_CASES)
def test_generated_command_lines_many(world, tmp_path_factory, case):
    _check_lines(world, tmp_path_factory, case)


# --------------------------------------------------------------------------- checkpoints
_PATHS = [
    ("format",),
    ("version",),
    ("meta",),
    ("meta", "dataset"),
    ("generator",),
    ("generator", "arch"),
    ("generator", "arch", "name"),
    ("generator", "arch", "kwargs"),
    ("generator", "arch", "kwargs", "hidden"),
    ("generator", "arch", "kwargs", "depth"),
    ("generator", "arch", "kwargs", "in_dim"),
    ("generator", "arch", "kwargs", "out_dim"),
    ("generator", "prior"),
    ("generator", "prior", "name"),
    ("generator", "prior", "shape"),
    ("generator", "output_range"),
    ("generator", "state"),
    ("discriminator",),
    ("discriminator", "arch", "kwargs", "hidden"),
    ("discriminator", "state"),
    ("discriminator", "output"),
]
_VALUES = st.one_of(
    _TEXT,
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.sampled_from([10**7, 10**9, 10**12, -1, 0]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.lists(st.integers(-(10**10), 10**10), max_size=4),
    st.dictionaries(_TEXT, st.integers(), max_size=2),
)


def _mutated_field(ckpt: dict, path: tuple, value) -> dict:
    c = ckpt
    for key in path[:-1]:
        if not isinstance(c, dict) or key not in c:
            return ckpt
        c = c[key]
    if isinstance(c, dict):
        c[path[-1]] = value
    return ckpt


@st.composite
def mutated_checkpoint(draw, raw: bytes):
    kind = draw(st.sampled_from(["field", "field", "truncate", "flip"]))
    if kind == "truncate":
        return raw[: draw(st.integers(0, len(raw) - 1))], True
    if kind == "flip":
        data = bytearray(raw)
        for _ in range(draw(st.integers(1, 8))):
            data[draw(st.integers(0, len(data) - 1))] ^= draw(st.integers(1, 255))
        return bytes(data), False  # a flip inside a tensor's bytes leaves a valid (different) checkpoint
    ckpt = torch.load(io.BytesIO(raw), weights_only=True)
    path = draw(st.sampled_from(_PATHS))
    value = draw(_VALUES)
    buf = io.BytesIO()
    torch.save(_mutated_field(ckpt, path, value), buf)
    return buf.getvalue(), False  # some replacements are still valid (e.g. another dataset name)


def _check_ckpt(world, tmp_path_factory, data, must_fail, method):
    work = tmp_path_factory.mktemp("ckpt")
    path = work / "in" / "g.pt"
    path.parent.mkdir()
    path.write_bytes(data)
    out = work / "out"
    argv = [
        "sample",
        "--no-progress",
        "--device",
        "cpu",
        "--ckpt",
        str(path),
        "-n",
        "20",
        "-m",
        method,
        "--out",
        str(out),
    ]
    argv += ["-o", "candidates=4"] if method == "sir" else []
    _run(argv, watch=path.parent, out=out, n=20, must_fail=must_fail)
    assert path.read_bytes() == data


@given(data=st.data())
@_settings(DEFAULT_CASES)
def test_generated_checkpoint_mutations(world, tmp_path_factory, data):
    raw = world["gan"].read_bytes()
    blob, must_fail = data.draw(mutated_checkpoint(raw))
    _check_ckpt(world, tmp_path_factory, blob, must_fail, data.draw(st.sampled_from(["none", "sir"])))


@pytest.mark.slow
@given(data=st.data())
@_settings(SLOW_CASES)
def test_generated_checkpoint_mutations_many(world, tmp_path_factory, data):
    raw = world["gan"].read_bytes()
    blob, must_fail = data.draw(mutated_checkpoint(raw))
    _check_ckpt(world, tmp_path_factory, blob, must_fail, data.draw(st.sampled_from(["none", "sir", "ddls"])))


# --------------------------------------------------------------------------- sample files
def _npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _forged_rows(raw: bytes, rows: int) -> bytes:
    """The same archive with the header of ``x`` declaring ``rows`` rows (the data left as it was)."""
    src = zipfile.ZipFile(io.BytesIO(raw))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "x.npy":
                header_end = data.index(b"\n") + 1
                header = data[:header_end].decode("latin1")
                start = header.index("'shape': (") + len("'shape': (")
                header = header[:start] + str(rows) + header[header.index(",", start) :]
                body = header[10:].rstrip("\n")
                hl = len(header) - 10
                data = (
                    data[:8]
                    + hl.to_bytes(2, "little")
                    + body.ljust(hl - 1).encode("latin1")
                    + b"\n"
                    + data[header_end:]
                )
            dst.writestr(info.filename, data)
    return out.getvalue()


@st.composite
def mutated_samples(draw):
    x = np.random.default_rng(draw(st.integers(0, 3))).normal(size=(draw(st.integers(30, 120)), 2)).astype(np.float32)
    kind = draw(st.sampled_from(["nonfinite", "dtype", "shape", "forged", "truncate", "bytes", "empty"]))
    if kind == "nonfinite":
        flat = x.reshape(-1)
        for _ in range(draw(st.integers(1, 5))):
            flat[draw(st.integers(0, flat.size - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
        return _npz_bytes(x=x)
    if kind == "dtype":
        return _npz_bytes(x=draw(st.sampled_from([x.astype(object), x.astype(str), x.astype(np.bool_)])))
    if kind == "shape":
        shape = draw(st.sampled_from([(len(x),), (len(x), 3), (0, 2), (len(x), 2, 2)]))
        return _npz_bytes(x=np.zeros(shape, np.float32))
    raw = _npz_bytes(x=x)
    if kind == "forged":
        return _forged_rows(raw, draw(st.sampled_from([10**6, 10**9, 10**12, 10**15])))
    if kind == "truncate":
        return raw[: draw(st.integers(1, len(raw) - 1))]
    if kind == "empty":
        return b""
    return draw(st.binary(min_size=1, max_size=600))


def _check_samples(world, tmp_path_factory, blob):
    work = tmp_path_factory.mktemp("samples")
    path = work / "in" / "s.npz"
    path.parent.mkdir()
    path.write_bytes(blob)
    out = work / "out"
    _run(
        ["eval", "--no-progress", "--device", "cpu", "--samples", str(path), "--data", "grid25", "--out", str(out)],
        watch=path.parent,
        out=out,
        must_fail=True,
    )
    assert path.read_bytes() == blob


@given(blob=mutated_samples())
@_settings(DEFAULT_CASES)
def test_generated_sample_file_mutations(world, tmp_path_factory, blob):
    _check_samples(world, tmp_path_factory, blob)


@pytest.mark.slow
@given(blob=mutated_samples())
@_settings(SLOW_CASES)
def test_generated_sample_file_mutations_many(world, tmp_path_factory, blob):
    _check_samples(world, tmp_path_factory, blob)


def test_the_forged_header_really_claims_more_rows(world):
    """Control: the forging helper changes the declared shape and nothing else."""
    x = np.arange(20, dtype=np.float32).reshape(10, 2)
    forged = _forged_rows(_npz_bytes(x=x), 10**9)
    with zipfile.ZipFile(io.BytesIO(forged)) as zf, zf.open("x.npy") as f:
        np.lib.format.read_magic(f)
        shape, _, _ = np.lib.format.read_array_header_1_0(f)
    assert shape == (10**9, 2)


@pytest.mark.parametrize("special", ["/dev/zero", "/dev/null", "fifo", "dir", "dangling"])
def test_special_files_as_checkpoints(world, tmp_path, special):
    if special.startswith("/dev") and not Path(special).exists():
        pytest.skip(f"{special} is absent")
    path = Path(special)
    if special == "fifo":
        if not hasattr(os, "mkfifo"):
            pytest.skip("no FIFOs here")
        path = tmp_path / "fifo.pt"
        os.mkfifo(path)
    elif special == "dir":
        path = tmp_path / "folder.pt"
        path.mkdir()
    elif special == "dangling":
        path = tmp_path / "link.pt"
        path.symlink_to(tmp_path / "nowhere")
    out = tmp_path / "out"
    code = _run(
        ["sample", "--no-progress", "--device", "cpu", "--ckpt", str(path), "-n", "10", "--out", str(out)],
        watch=tmp_path,
        out=out,
        must_fail=True,
    )
    assert code == 2


# --------------------------------------------------------------------------- finished runs and concurrent writers
def _good_run(world, out: Path, seed: int = 0, n: int = 50) -> None:
    res = CliRunner().invoke(
        app,
        [
            "sample",
            "--no-progress",
            "--device",
            "cpu",
            "--ckpt",
            str(world["gan"]),
            "--ratio",
            str(world["ratio"]),
            "-m",
            "sir",
            "-o",
            "candidates=4",
            "-n",
            str(n),
            "--seed",
            str(seed),
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output


def _bytes_of(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@given(case=hostile_sample_line())
@_settings(40)
def test_a_finished_run_survives_any_failed_run_into_its_folder(world, tmp_path_factory, case):
    out = tmp_path_factory.mktemp("finished") / "out"
    _good_run(world, out)
    before = _bytes_of(out)
    argv, options, must_fail = case
    res = CliRunner().invoke(app, _sample_argv(world, out, argv, options))
    _log("sample-into-a-finished-run", res.exit_code)
    if res.exit_code != 0:
        assert res.exit_code == 2 and "Traceback" not in res.output
        assert _bytes_of(out) == before, "a failed run changed a finished one"
    else:
        assert not must_fail
        assert json.loads((out / "run.json").read_text())["files"] == sorted(
            p.name for p in out.iterdir() if p.name != "run.json"
        )


def test_a_run_that_fails_after_writing_leaves_the_previous_set_byte_identical(world, tmp_path, monkeypatch):
    """The failure comes after samples.npz was staged (the picture cannot be written)."""
    import refine.cli.sample as sample_cli

    out = tmp_path / "out"
    _good_run(world, out)
    before = _bytes_of(out)

    def broken(path, *a, **k):
        Path(path).write_bytes(b"\x89PNG partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(sample_cli, "save_picture", broken)
    res = CliRunner().invoke(
        app,
        [
            "sample",
            "--no-progress",
            "--device",
            "cpu",
            "--ckpt",
            str(world["gan"]),
            "--ratio",
            str(world["ratio"]),
            "-m",
            "sir",
            "-o",
            "candidates=4",
            "-n",
            "70",
            "--seed",
            "3",
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 2 and "No space left" in res.output
    assert _bytes_of(out) == before


def test_a_second_run_replaces_the_whole_set(world, tmp_path):
    out = tmp_path / "out"
    _good_run(world, out, seed=0, n=50)
    _good_run(world, out, seed=1, n=30)
    record = json.loads((out / "run.json").read_text())
    with np.load(out / "samples.npz") as f:
        assert len(f["x"]) == record["n"] == 30
    assert record["seed"] == 1
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_a_folder_being_written_is_refused(world, tmp_path):
    out = tmp_path / "out"
    _good_run(world, out)
    before = _bytes_of(out)
    with RunFolder(out):  # another writer holds the folder
        res = CliRunner().invoke(
            app,
            ["sample", "--no-progress", "--device", "cpu", "--ckpt", str(world["gan"]), "-n", "10", "--out", str(out)],
        )
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == 2 and len(lines) == 1 and "being written by another refine run" in lines[0], res.output
    assert _bytes_of(out) == before


def test_a_refused_run_leaves_a_folder_that_another_run_holds(tmp_path):
    """The race behind concurrent writers: a run that made the folder and failed must not remove it
    while another run holds it, and a run about to lock a folder that vanished makes it again."""
    out = tmp_path / "new"
    out.mkdir()
    with RunFolder(out):  # another run holds the (still empty) folder
        assert remove_if_unused(out) is False and out.is_dir()
    assert remove_if_unused(out) is True and not out.exists()
    assert remove_if_unused(out) is True  # already gone
    with RunFolder(out) as run:  # removed between a run's check and its lock: made again
        run.commit({"n": 0})
    assert json.loads((out / "run.json").read_text())["files"] == []


def test_concurrent_writers_leave_one_consistent_set(world, tmp_path):
    """Three processes started at once into one folder: each finishes or is refused in one line,
    and the folder ends with samples and a record that agree."""
    out = tmp_path / "out"
    sizes = [40, 60, 80]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "refine",
                "sample",
                "--no-progress",
                "--device",
                "cpu",
                "--ckpt",
                str(world["gan"]),
                "--ratio",
                str(world["ratio"]),
                "-m",
                "sir",
                "-o",
                "candidates=4",
                "-n",
                str(n),
                "--out",
                str(out),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        for n in sizes
    ]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    for code, err in results:
        assert code in (0, 2), err
        if code == 2:
            assert "being written by another refine run" in err and "Traceback" not in err, err
    assert any(code == 0 for code, _ in results)
    record = json.loads((out / "run.json").read_text())
    with np.load(out / "samples.npz") as f:
        assert len(f["x"]) == record["n"]
    assert record["n"] in sizes
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_large_n_streams_in_chunks_and_matches_one_call_below_the_chunk(world, tmp_path, monkeypatch):
    """With a small chunk, n spans several chunks: the file holds all n rows, chunk 0 equals a
    one-chunk run of its size with the same seed, and the record counts the chunks."""
    import refine.budget as budget

    out1, out2 = tmp_path / "a", tmp_path / "b"
    _good_run(world, out1, seed=5, n=100)
    row = 4 * (2 + 2)
    monkeypatch.setattr(budget, "CHUNK_BYTES", 40 * row)
    monkeypatch.setattr(
        "refine.cli.sample.chunk_rows", lambda target, n: budget.chunk_rows(target, n, chunk_bytes=40 * row)
    )
    _good_run(world, out2, seed=5, n=100)
    with np.load(out1 / "samples.npz") as a, np.load(out2 / "samples.npz") as b:
        assert b["x"].shape == (100, 2) and b["z"].shape == (100, 2)
        _good_run(world, tmp_path / "c", seed=5, n=40)
        with np.load(tmp_path / "c" / "samples.npz") as c:
            np.testing.assert_array_equal(b["x"][:40], c["x"])
        assert not np.array_equal(a["x"][40:80], b["x"][40:80])  # later chunks draw from their own seeds
    info = json.loads((out2 / "run.json").read_text())["info"]
    assert info["chunks"] == {"count": 3, "size": 40}
    assert math.isclose(info["g_evals_per_sample"], 4.0)


def test_a_decompression_bomb_in_an_image_folder_is_one_line(tmp_path):
    """A 20000x20000 PNG (400 M pixels, 0.4 MB on disk) among sample images: refused before decoding."""
    from PIL import Image

    folder = tmp_path / "in" / "samples"
    folder.mkdir(parents=True)
    Image.new("L", (20000, 20000)).save(folder / "bomb.png")
    Image.new("L", (28, 28)).save(folder / "ok.png")
    out = tmp_path / "out"
    code = _run(
        [
            "eval",
            "--no-progress",
            "--device",
            "cpu",
            "--samples",
            str(folder),
            "--data",
            "mnist:/nonexistent",
            "--out",
            str(out),
        ],
        watch=tmp_path / "in",
        out=out,
        must_fail=True,
    )
    assert code == 2
    res = CliRunner().invoke(
        app, ["eval", "--no-progress", "--samples", str(folder), "--data", "mnist:/nonexistent", "--out", str(out)]
    )
    assert "decompression bomb" in res.output, (
        res.output
    )  # refused for what it is, before the missing dataset is noticed


def test_a_terminated_run_leaves_nothing_behind(world, tmp_path):
    """SIGTERM (``kill``, a scheduler's time limit) in the middle of a long streamed run: the staged
    files are removed, the exit is the interrupt's, and the finished run in the folder is untouched."""
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "out"
    _good_run(world, out)
    before = _bytes_of(out)
    cmd = [sys.executable, "-m", "refine", "sample", "--no-progress", "--device", "cpu", "--ckpt", str(world["gan"])]
    # SIR over 20 candidates for 5e7 samples: the first chunk is staged within seconds and the whole run
    # would take minutes, so the signal lands mid-run however slow the machine (a raw run of this tiny
    # generator could finish within seconds, before the signal), with under 1 GB on disk
    slow = ["--ratio", str(world["ratio"]), "-m", "sir", "-o", "candidates=20", "-n", "50000000"]
    proc = subprocess.Popen([*cmd, *slow, "--out", str(out)], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not any(p.is_dir() and any(p.iterdir()) for p in out.glob(".staging-*")):
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "the run never started writing"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == ["error: interrupted; nothing was written in place of existing outputs"]
    assert sorted(p.name for p in out.iterdir()) == sorted(before), "the staged files were left behind"
    assert _bytes_of(out) == before
