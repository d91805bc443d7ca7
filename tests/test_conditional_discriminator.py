"""A conditional discriminator ``D(x, y)`` as ``log r(x | y)``: calibration per class, its ratio file.

The closed form: class ``y``'s data is ``N(mu_y, 1)`` on the first coordinate and the generator's is
``N(0, 1)``, so ``log r(x | y) = mu_y x_0 - mu_y^2 / 2``. The "discriminator" reads ``c_y x_0``
with a wrong scale ``c_y`` per class; a logistic calibration of class ``y`` must find the slope
``mu_y / c_y``, which one calibration shared by all classes cannot.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from torch import nn

import refine
from refine.conditional import ConditionalDiscriminatorRatio, calibrate_per_class
from refine.errors import CheckpointError, ConfigError, ShapeError
from refine.io import safe_load, save_conditional_discriminator_ratio
from refine.nets import arch_config, build
from refine.ratio.calibration import LogisticCalibration

MU = torch.tensor([2.0, -1.0, 0.5])
SCALE = torch.tensor([5.0, 0.2, 1.0])  # the discriminator's wrong scale per class
K = len(MU)


class _ScaledFirst(nn.Module):
    def forward(self, x, y):
        return SCALE[y] * x[:, 0]


def _data(n_per_class: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(K).repeat_interleave(n_per_class)
    real = torch.randn(len(y), 2, generator=g)
    real[:, 0] += MU[y]
    fake = torch.randn(len(y), 2, generator=g)
    return real, y, fake, y.clone()


def test_per_class_calibration_finds_each_class_scale():
    n = 4000
    real, ry, fake, fy = _data(n)
    ratio = ConditionalDiscriminatorRatio(_ScaledFirst(), K, "logit")
    cal, report = calibrate_per_class(ratio, real, ry, fake, fy, "logistic", rng=torch.Generator().manual_seed(0))
    assert set(report["per_class"]) == set(range(K)) and report["method"] == "logistic"
    for c in range(K):
        slope = cal.calibration[c].a * SCALE[c].item()  # log r = a * (c_y x0) + b
        # the logistic slope's standard error is at most 1 / sqrt(n_c * I), with the Fisher information
        # per point I = E[p (1 - p) x0^2] >= 0.05 for these classes; 5 standard errors
        assert abs(slope - MU[c].item()) < 5 / math.sqrt(2 * n * 0.05), (c, slope)
        assert report["per_class"][c]["after"]["log_loss"] <= report["per_class"][c]["before"]["log_loss"] + 1e-9
    x, y = torch.randn(9, 2), torch.tensor([0, 1, 2, 2, 1, 0, 0, 1, 2])
    with torch.no_grad():
        joint = cal.log_ratio(x, y)
        for c in range(K):
            m = y == c
            assert torch.allclose(joint[m], cal.at(c).log_ratio(x[m]), atol=1e-6)
            # the same map as the class's own: a * D + b (the prior odds of the calibration data are 1)
            assert torch.allclose(joint[m], cal.calibration[c].a * SCALE[c] * x[m, 0] + cal.calibration[c].b, atol=1e-5)
    assert cal.differentiable and "per class" in repr(cal)


def test_per_class_calibration_refuses_a_class_without_data():
    real, ry, fake, fy = _data(10)
    keep = ry != 1
    ratio = ConditionalDiscriminatorRatio(_ScaledFirst(), K, "logit")
    with pytest.raises(ShapeError, match="class 1"):
        calibrate_per_class(ratio, real[keep], ry[keep], fake, fy)
    with pytest.raises(ConfigError, match="one map per class"):
        ratio.with_calibration([LogisticCalibration(1.0, 0.0)])


# --------------------------------------------------------------------------- the ratio file
def _projection(k=3):
    return build("proj-d", image_size=28, channels=1, width=4, num_classes=k).eval()


def _save(path, ratio, k=3):
    save_conditional_discriminator_ratio(
        path, ratio, arch_config("proj-d", image_size=28, channels=1, width=4, num_classes=k), meta={"note": "test"}
    )


def _calibrated(k=3):
    maps = [LogisticCalibration(0.5 + c, -c / 2) for c in range(k)]
    return ConditionalDiscriminatorRatio(_projection(k), k, "logit", temperature=2.0, calibration=maps)


@pytest.mark.parametrize("name", ["r.pt", "r.safetensors"])
@pytest.mark.parametrize("calibrated", [True, False])
def test_conditional_discriminator_ratio_file_roundtrip(tmp_path, name, calibrated):
    ratio = _calibrated() if calibrated else ConditionalDiscriminatorRatio(_projection(), 3, "logit")
    _save(tmp_path / name, ratio)
    loaded = refine.load_ratio(tmp_path / name)
    assert isinstance(loaded, ConditionalDiscriminatorRatio) and loaded.num_classes == 3
    assert loaded.temperature == ratio.temperature and (loaded.calibration is None) == (not calibrated)
    x, y = torch.rand(6, 1, 28, 28) * 2 - 1, torch.tensor([0, 1, 2, 2, 1, 0])
    with torch.no_grad():
        assert torch.allclose(loaded.log_ratio(x, y), ratio.log_ratio(x, y), atol=1e-6)
        assert torch.allclose(loaded.at(2).log_ratio(x), ratio.log_ratio(x, torch.full((6,), 2)), atol=1e-6)
    assert safe_load(tmp_path / name, what="ratio file")["kind"] == "discriminator-conditional"


@pytest.mark.parametrize(
    "edit,needle",
    [
        (lambda o: o.update(num_classes=0), "num_classes"),
        (lambda o: o.update(num_classes=2.5), "num_classes"),
        (lambda o: o.update(label="string"), "label"),
        (lambda o: o.update(output="softmax"), "output"),
        (lambda o: o.update(temperature=-1.0), "temperature"),
        (lambda o: o.update(calibration=o["calibration"][:2]), "one map per class"),
        (lambda o: o.update(calibration="logistic"), "one map per class"),
        (lambda o: o["calibration"].__setitem__(1, {"name": "os.system", "a": 1.0}), "calibration of class 1"),
        (lambda o: o["calibration"].__setitem__(0, None), "every class needs"),
        (lambda o: o["calibration"].__setitem__(2, {"name": "logistic", "a": "1"}), "calibration of class 2"),
        (lambda o: o.update(arch={"name": "os.system", "kwargs": {}}), "discriminator"),
        (lambda o: o.update(state={k: v[:1] for k, v in o["state"].items()}), "do not fit"),
    ],
)
def test_hostile_conditional_discriminator_files_are_one_checkpoint_error(tmp_path, edit, needle):
    _save(tmp_path / "r.pt", _calibrated())
    obj = torch.load(tmp_path / "r.pt", weights_only=True)
    edit(obj)
    torch.save(obj, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match=needle):
        refine.load_ratio(tmp_path / "bad.pt")


_FIELDS = [
    ("num_classes",),
    ("label",),
    ("output",),
    ("temperature",),
    ("calibration",),
    ("calibration", 0),
    ("calibration", 1, "name"),
    ("calibration", 2, "a"),
    ("calibration", 2, "b"),
    ("arch",),
    ("arch", "name"),
    ("arch", "kwargs"),
    ("arch", "kwargs", "width"),
    ("arch", "kwargs", "num_classes"),
    ("state",),
]
_ANY = st.one_of(
    st.text(max_size=12),
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.lists(st.one_of(st.integers(-5, 5), st.none(), st.dictionaries(st.text(max_size=4), st.integers())), max_size=4),
    st.dictionaries(st.text(max_size=6), st.one_of(st.integers(), st.text(max_size=4)), max_size=3),
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(_FIELDS), value=_ANY)
@example(field=("calibration", 2, "a"), value=3.4028235677973366e38)  # a slope that turns scores into -inf in float32
@example(field=("temperature",), value=8.323746318280351e-217)  # a temperature that does the same
def test_generated_hostile_fields_load_or_give_one_checkpoint_error(tmp_path, field, value):
    """Any value in any field of a conditional discriminator ratio file: it loads and gives finite log ratios, or one CheckpointError."""
    good = tmp_path / "good.pt"
    if not good.exists():
        _save(good, _calibrated())
    obj = torch.load(good, weights_only=True)
    node = obj
    for key in field[:-1]:
        node = node[key] if isinstance(node, (dict, list)) and (isinstance(node, list) or key in node) else None
        if node is None:
            return
    node[field[-1]] = value
    bad = tmp_path / "bad.pt"
    torch.save(obj, bad)
    try:
        r = refine.load_ratio(bad)
    except CheckpointError as e:
        assert str(e).startswith(str(bad)) and "\n" not in str(e)
        return
    x = torch.rand(4, 1, 28, 28) * 2 - 1
    with torch.no_grad():
        out = r.log_ratio(x, torch.tensor([0, 1, 2, 0]))
    assert out.shape == (4,) and torch.isfinite(out).all()
