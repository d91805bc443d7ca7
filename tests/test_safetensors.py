"""refine's own files as safetensors: the configuration as JSON in the metadata, the tensors beside it.

Every kind round-trips (same tensors, same configuration, same networks as the ``.pt`` form);
``.pt`` files keep loading; generated damage to a safetensors file (truncation, flipped bytes,
JSON of the wrong shape or types) is one CheckpointError; the CLI samples from one end to end.
"""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from typer.testing import CliRunner

import refine
from refine.cli import app
from refine.errors import CheckpointError, ConfigError
from refine.generator import NormalPrior, UniformPrior
from refine.io import (
    load_gan,
    load_ratio,
    safe_load,
    save_discriminator_ratio,
    save_feature_ratio,
    save_gan,
    tensorfile,
)
from refine.io.foreign import detect_format, load_network
from refine.nets import arch_config, build_from_config
from refine.ratio.calibration import IsotonicCalibration, LogisticCalibration
from refine.ratio.discriminator import DiscriminatorRatio
from refine.ratio.feature import FeatureRatio, RatioHead

G_ARCH = arch_config("mlp", in_dim=2, out_dim=2, hidden=8, depth=2)
D_ARCH = arch_config("mlp", in_dim=2, out_dim=1, hidden=8, depth=2)
DCGAN_G = arch_config("dcgan-g", image_size=28, channels=1, nz=4, width=4)  # BatchNorm: int64 0-d buffers
DCGAN_D = arch_config("dcgan-d", image_size=28, channels=1, width=4, norm="spectral")  # weight_orig, u, v
CGAN_G = arch_config("cdcgan-g", image_size=28, channels=1, nz=4, width=4, num_classes=3)
CGAN_D = arch_config("proj-d", image_size=28, channels=1, width=4, num_classes=3)
FEATURES = arch_config(
    "resnet34-features", in_channels=1, num_classes=3, feature_dim=8, widths=[4, 4, 8, 8], stem_stride=2
)
HEAD = arch_config("ratio-head", in_dim=8, hidden=[16], dropout=0.0)


def _built(cfg, seed):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_from_config(cfg).eval()


def _same(a, b, where="file"):
    """Equal nested values, tensors equal bit for bit with the same dtype and shape (tuples compare as lists)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), where
        assert (a.dtype, a.shape) == (b.dtype, b.shape) and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), where
        for k in a:
            _same(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}/{i}")
    else:
        assert a == b and type(a) is type(b), (where, a, b)


def _same_states(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), k


# --------------------------------------------------------------------------- one writer per kind
def _write_gan(path):
    save_gan(
        path,
        generator=_built(G_ARCH, 0),
        generator_arch=G_ARCH,
        prior=UniformPrior((2,)),
        discriminator=_built(D_ARCH, 1),
        discriminator_arch=D_ARCH,
        discriminator_output="critic",
        meta={"dataset": "grid25", "tuple": (1, 2), "nested": {"x": [1.5, None, True]}, "inf": float("inf")},
        extra={"train_state": {"modules": {"g": _built(G_ARCH, 0).state_dict()}, "rng": torch.ByteTensor([1, 2])}},
    )


def _write_image_gan(path):
    save_gan(
        path,
        generator=_built(DCGAN_G, 0),
        generator_arch=DCGAN_G,
        prior=NormalPrior((4, 1, 1)),
        discriminator=_built(DCGAN_D, 1),
        discriminator_arch=DCGAN_D,
        output_range="[-1,1]",
    )


def _write_generator_only(path):
    save_gan(path, generator=_built(G_ARCH, 0), generator_arch=G_ARCH, prior=NormalPrior((2,)))


def _write_conditional(path):
    save_gan(
        path,
        generator=_built(CGAN_G, 0),
        generator_arch=CGAN_G,
        prior=NormalPrior((4, 1, 1)),
        discriminator=_built(CGAN_D, 1),
        discriminator_arch=CGAN_D,
        output_range="[-1,1]",
        conditional={"num_classes": 3, "label": "index"},
    )


def _write_logistic(path):
    cal = LogisticCalibration(1.25, -0.5, log_prior_odds=0.1)
    save_discriminator_ratio(
        path, DiscriminatorRatio(_built(D_ARCH, 1), "logit", temperature=2.0, calibration=cal), D_ARCH, meta={"n": 3}
    )


def _write_isotonic(path):
    cal = IsotonicCalibration([-1.0, 0.0, 2.0], [0.1, 0.5, 0.75])
    save_discriminator_ratio(path, DiscriminatorRatio(_built(D_ARCH, 1), "logit", calibration=cal), D_ARCH)


def _write_feature_sp(path):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        head = RatioHead(8, (16,)).eval()
    ratio = FeatureRatio(_built(FEATURES, 2), head, activation="softplus", image_size=28)
    save_feature_ratio(path, ratio, feature_arch=FEATURES, head_arch=HEAD, meta={"note": "test"})


KINDS = {
    "gan": (_write_gan, load_gan),
    "image-gan": (_write_image_gan, load_gan),
    "generator-only": (_write_generator_only, load_gan),
    "conditional-gan": (_write_conditional, load_gan),
    "ratio-logistic": (_write_logistic, load_ratio),
    "ratio-isotonic": (_write_isotonic, load_ratio),
    "ratio-feature-sp": (_write_feature_sp, load_ratio),
}


def _networks(loaded) -> list[torch.nn.Module]:
    if isinstance(loaded, refine.io.LoadedGAN):
        return [loaded.generator.net] + ([loaded.discriminator] if loaded.discriminator is not None else [])
    if isinstance(loaded, FeatureRatio):
        return [loaded.feature_net, loaded.head]
    return [loaded.net]


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_round_trips_and_matches_its_pt_form(tmp_path, kind):
    write, load = KINDS[kind]
    st_path, pt_path = tmp_path / "f.safetensors", tmp_path / "f.pt"
    write(st_path)
    write(pt_path)
    assert tensorfile.sniff(st_path.read_bytes()) == "safetensors" and tensorfile.sniff(pt_path.read_bytes()) == "torch"
    head = tensorfile.safetensors_header(st_path.read_bytes())
    config = json.loads(head["__metadata__"][tensorfile.METADATA_KEY])
    assert config["format"] in ("refine.gan", "refine.ratio") and config["version"] == 1
    _same(safe_load(pt_path), safe_load(st_path))  # the same tensors and configuration either way
    a, b = load(pt_path), load(st_path)
    for x, y in zip(_networks(a), _networks(b), strict=True):
        _same_states(x, y)
    assert detect_format(st_path) == "refine"


def test_loaded_networks_compute_the_same_values(tmp_path):
    _write_logistic(tmp_path / "r.safetensors")
    _write_logistic(tmp_path / "r.pt")
    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(0))
    a, b = load_ratio(tmp_path / "r.pt"), load_ratio(tmp_path / "r.safetensors")
    assert torch.equal(a.log_ratio(x), b.log_ratio(x))
    assert b.temperature == 2.0 and b.calibration.to_config() == a.calibration.to_config()


def test_the_shipped_files_are_safetensors_and_load():
    from refine.io.pretrained import manifest, pretrained_path

    for entry in manifest()["checkpoints"]:
        path = pretrained_path(entry["name"])  # checked against the manifest's sha256
        if not path.is_file():
            continue
        assert path.suffix == ".safetensors" and tensorfile.sniff(path.read_bytes()[:16]) == "safetensors"
        if entry["name"].startswith("toy2d"):
            (load_gan if entry["kind"] == "gan" else load_ratio)(path)


def test_a_refine_safetensors_file_is_not_a_foreign_state_dict(tmp_path):
    _write_gan(tmp_path / "g.safetensors")
    with pytest.raises(ConfigError, match="names its own architecture; drop --arch"):
        load_network(tmp_path / "g.safetensors", arch="mlp", arch_kwargs={"in_dim": 2, "out_dim": 2})
    with pytest.raises(ConfigError, match="is a refine checkpoint; load it with refine.load_gan"):
        load_network(tmp_path / "g.safetensors")


def test_a_foreign_safetensors_state_dict_is_not_a_refine_file(tmp_path):
    from safetensors.torch import save_file

    save_file(_built(G_ARCH, 0).state_dict(), tmp_path / "sd.safetensors")
    with pytest.raises(CheckpointError, match="without refine's configuration.*--arch"):
        load_gan(tmp_path / "sd.safetensors")


def test_values_safetensors_cannot_hold_are_refused_when_writing(tmp_path):
    with pytest.raises(ConfigError, match="reserved for tensors"):
        tensorfile.write({"format": "refine.gan", "meta": {"$tensor": "x"}}, tmp_path / "x.safetensors")
    with pytest.raises(ConfigError, match="cannot store a object"):
        tensorfile.write({"meta": {"x": object()}}, tmp_path / "x.safetensors")
    assert not list(tmp_path.iterdir())  # nothing half-written


# --------------------------------------------------------------------------- hostile files
def _pack_raw(config_text, tensors: dict[str, torch.Tensor] | None = None) -> bytes:
    """A safetensors file whose refine metadata is ``config_text`` exactly (valid safetensors framing)."""
    return st_save(tensors or {}, metadata={tensorfile.METADATA_KEY: config_text})


@pytest.fixture(scope="module")
def good_file(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("st") / "g.safetensors"
    _write_gan(path)
    return path.read_bytes()


def _json_values():
    leaf = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=12),
    )
    return st.recursive(
        leaf,
        lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
        max_leaves=12,
    )


_SETTINGS = settings(
    max_examples=120,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _load_or_refuse(tmp_path, data: bytes, name="case.safetensors") -> None:
    path = tmp_path / name
    path.write_bytes(data)
    for load in (load_gan, load_ratio):
        try:
            load(path)
        except CheckpointError as e:
            assert "\n" not in str(e) and str(e)


@given(data=st.data())
@_SETTINGS
def test_damaged_safetensors_files_are_one_error_line(tmp_path, good_file, data):
    how = data.draw(st.sampled_from(["truncate", "flip", "splice"]))
    blob = bytearray(good_file)
    if how == "truncate":
        blob = blob[: data.draw(st.integers(0, len(blob) - 1))]
    elif how == "flip":
        for _ in range(data.draw(st.integers(1, 8))):
            i = data.draw(st.integers(0, len(blob) - 1))
            blob[i] ^= 1 << data.draw(st.integers(0, 7))
    else:  # forge the header length
        blob[:8] = struct.pack("<Q", data.draw(st.integers(0, 2**64 - 1)))
    _load_or_refuse(tmp_path, bytes(blob))


@given(data=st.data())
@_SETTINGS
def test_forged_configurations_are_one_error_line(tmp_path, good_file, data):
    """Wrong JSON types anywhere in the configuration, references to missing tensors, stray tensors, bad JSON."""
    head = tensorfile.safetensors_header(good_file)
    config = json.loads(head["__metadata__"][tensorfile.METADATA_KEY])
    tensors = st_load(good_file)
    how = data.draw(st.sampled_from(["replace", "drop", "text", "ref", "stray", "deep"]))
    if how in ("replace", "drop"):
        # walk to a random entry and replace (or delete) it
        node, key = config, None
        for _ in range(data.draw(st.integers(0, 4))):
            keys = list(node) if isinstance(node, dict) else list(range(len(node))) if isinstance(node, list) else []
            if not keys:
                break
            key = data.draw(st.sampled_from(keys))
            if not isinstance(node[key], (dict, list)) or data.draw(st.booleans()):
                break
            node, key = node[key], None
        if key is None:
            keys = list(node) if isinstance(node, dict) else list(range(len(node)))
            key = data.draw(st.sampled_from(keys)) if keys else None
        if key is not None:
            if how == "drop":
                del node[key]
            else:
                node[key] = data.draw(_json_values())
        text = json.dumps(config)
    elif how == "text":
        text = data.draw(st.one_of(st.text(max_size=40), st.just("{"), st.just("[1, 2]"), st.just("null")))
    elif how == "ref":
        config["generator"]["state"] = {"net.0.weight": {"$tensor": data.draw(st.text(max_size=10))}}
        text = json.dumps(config)
    elif how == "stray":
        tensors["stray"] = torch.zeros(2)
        text = json.dumps(config)
    else:  # nesting deeper than any refine file, up to deeper than Python's JSON parser goes
        depth = data.draw(st.integers(30, 100_000))
        text = json.dumps(config)[:-1] + ', "deep": ' + "[" * depth + "]" * depth + "}"
    _load_or_refuse(tmp_path, _pack_raw(text, tensors))


def test_absurd_sizes_in_the_configuration_are_refused_before_building(tmp_path, good_file):
    head = tensorfile.safetensors_header(good_file)
    config = json.loads(head["__metadata__"][tensorfile.METADATA_KEY])
    tensors = st_load(good_file)
    config["generator"]["arch"]["kwargs"]["hidden"] = 2**20
    (tmp_path / "big.safetensors").write_bytes(_pack_raw(json.dumps(config), tensors))
    with pytest.raises(CheckpointError, match="more than fits in memory|do not fit"):
        load_gan(tmp_path / "big.safetensors")


# --------------------------------------------------------------------------- the CLI
def test_refine_sample_on_safetensors_files(tmp_path):
    runner = CliRunner()
    _write_gan(tmp_path / "g.safetensors")
    _write_logistic(tmp_path / "r.safetensors")
    out = tmp_path / "run"
    args = ["sample", "--ckpt", tmp_path / "g.safetensors", "--ratio", tmp_path / "r.safetensors"]
    args += ["--method", "sir", "-n", "32", "--seed", "3", "--out", out, "--device", "cpu", "--no-progress"]
    res = runner.invoke(app, [str(a) for a in args])
    assert res.exit_code == 0, res.output
    x = np.load(out / "samples.npz")["x"]
    assert x.shape == (32, 2) and np.isfinite(x).all()
    record = json.dumps(json.loads((out / "run.json").read_text()))
    assert "g.safetensors" in record and "r.safetensors" in record
    # the same run from the .pt forms gives the same samples
    _write_gan(tmp_path / "g.pt")
    _write_logistic(tmp_path / "r.pt")
    args2 = [str(a).replace(".safetensors", ".pt") for a in args]
    args2[args2.index(str(out))] = str(tmp_path / "run_pt")
    res = runner.invoke(app, args2)
    assert res.exit_code == 0, res.output
    assert np.array_equal(np.load(tmp_path / "run_pt" / "samples.npz")["x"], x)


def test_refine_train_writes_safetensors_for_a_safetensors_name_and_resumes_from_it(tmp_path):
    runner = CliRunner()
    base = ["train", "--n-train", "512", "--batch-size", "128", "--hidden", "8", "--seed", "5", "--device", "cpu"]
    base += ["--no-progress"]
    st_out, pt_out = tmp_path / "g.safetensors", tmp_path / "g.pt"
    res = runner.invoke(app, [*base, "--epochs", "1", "--out", str(st_out)])
    assert res.exit_code == 0, res.output
    assert tensorfile.sniff(st_out.read_bytes()[:16]) == "safetensors"
    res = runner.invoke(app, [*base, "--epochs", "2", "--resume", str(st_out), "--out", str(st_out)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, [*base, "--epochs", "2", "--out", str(pt_out)])
    assert res.exit_code == 0, res.output
    a, b = load_gan(pt_out), load_gan(st_out)
    _same_states(a.generator.net, b.generator.net)  # resumed from safetensors = never interrupted
    _same_states(a.discriminator, b.discriminator)
