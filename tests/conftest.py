"""Shared test fixtures and helpers."""
import os

import pytest
import torch

# Deterministic, quiet CPU runs on a 2-core machine.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
