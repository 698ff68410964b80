"""Shared test fixtures and helpers."""
import os
import sys
from pathlib import Path

import pytest
import torch

# The experiment tooling (toy data, demo, sweeps, benchmark) lives beside the plugin, in tools/.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'tools'))

# Without a GPU, Triton kernels (mmdet_ohem.kernels) can only run in Triton's interpreter; it must be chosen
# before triton is first imported.
if not torch.cuda.is_available():
    os.environ.setdefault('TRITON_INTERPRET', '1')

# Deterministic, quiet CPU runs on a 2-core machine.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` are skipped where torch sees no CUDA GPU."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason='needs a CUDA GPU (marker `cuda`; run tools/gpu_check.sh on a GPU machine)')
    for item in items:
        if 'cuda' in item.keywords:
            item.add_marker(skip)
