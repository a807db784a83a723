"""Shared test fixtures. Sets TRITON_INTERPRET=1 when CUDA is absent so triton kernels run on
CPU tensors; locates the real data in ../shared/data (skipping tests that need it if absent)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

try:
    import torch

    _HAS_CUDA = torch.cuda.is_available()
except Exception:  # pragma: no cover
    _HAS_CUDA = False
if not _HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")

# datasets built by tests (and by the CLI they run) go to a temporary data root, never to the
# user's data directory; subprocesses inherit it
os.environ["GNNHYDRO_DATA_ROOT"] = tempfile.mkdtemp(prefix="gnnhydro-test-data-")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO_ROOT / ".." / "shared" / "data").resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to ../shared/data (real datasets); skips the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (../shared/data next to the repository)")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _seed():
    import torch

    torch.manual_seed(0)
    yield
