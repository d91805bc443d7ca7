import os
from pathlib import Path

import pytest
import torch
from hypothesis import settings

import refine  # noqa: F401  (first: its _compat lets PyPI's torchvision import beside the CPU torch, for tests that import pytorch_fid or torchvision directly)

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

# every property test is seeded: the same cases on every run (a test's own @settings keeps the rest of these)
settings.register_profile("refine", derandomize=True, database=None)
settings.load_profile("refine")

SHARED = Path(os.environ.get("REFINE_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))


@pytest.fixture
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"shared data folder {SHARED} is absent")
    return SHARED


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread for a module of tiny networks: on a shared 2-core machine the thread
    pool's synchronisation per op costs more than a second thread gains. Use it as
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def rng():
    return torch.Generator().manual_seed(1234)
