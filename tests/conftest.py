"""Shared test set-up: small thread counts (the machine has 2 cores) and the path to ../shared/data."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def fsdd_dir() -> Path:
    d = SHARED_DATA / "fsdd"
    if not d.is_dir() or not any(d.glob("*.wav")):
        pytest.skip(f"real FSDD recordings not found at {d} (they live outside the project)")
    return d
