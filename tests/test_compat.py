"""The torchvision compatibility shim, both ways, each in a fresh interpreter."""

import subprocess
import sys
import textwrap


def run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip()


def test_shim_when_native_ops_cannot_load():
    # Force the "compiled library does not load" path, whatever this machine has.
    out = run("""
        import refine._compat as c
        c._load_native = lambda d: False
        status = c.ensure_torchvision()
        import torch, torchvision
        from torchvision import transforms
        t = transforms.Normalize([0.5], [0.5])(torch.ones(1, 2, 2))
        assert float(t.max()) == 1.0
        print(status, hasattr(torch.ops.torchvision, "nms"), c.ensure_torchvision())
    """)
    assert out == "shimmed True shimmed"


def test_does_nothing_when_native_ops_load():
    # Stand in for a working compiled library: the ops exist before refine looks.
    out = run("""
        import torch
        lib = torch.library.Library("torchvision", "DEF")
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        import refine._compat as c
        print(c.ensure_torchvision(), c._library is None)
    """)
    assert out == "native True"


def test_leaves_an_imported_torchvision_alone():
    out = run("""
        import refine            # runs the shim once
        import torchvision
        import refine._compat as c
        c._status = None          # a second caller, after torchvision is imported
        print(c.ensure_torchvision())
    """)
    assert out == "imported"


def test_absent_torchvision_is_reported():
    out = run("""
        import importlib.util, refine._compat as c
        c._status = None          # importing refine already ran it once
        real = importlib.util.find_spec
        importlib.util.find_spec = lambda name, *a: None if name == "torchvision" else real(name, *a)
        print(c.ensure_torchvision())
    """)
    assert out == "absent"
