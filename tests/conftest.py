import os
from pathlib import Path

import pytest

# Deterministic, small thread counts keep CPU tests reproducible on a 2-core CI machine.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = REPO_ROOT.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The read-only reference data beside the checkout; tests that need it skip without it."""
    if not SHARED_DIR.is_dir():
        pytest.skip("reference data directory ../shared is not present")
    return SHARED_DIR
