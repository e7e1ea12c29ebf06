"""Shared, read-only dataset trees for the data tests (built once per session; tests that damage files build
their own copy in ``tmp_path``)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # `import fixtures` from the test modules

import fixtures


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Data pipelines run in single-threaded DataLoader workers; tiny tensors gain nothing from intra-op
    threads, and on a busy 2-core machine their spin-waiting makes the tests many times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def data_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A $LEMORE_DATA folder holding every dataset (but the synthetic one) in its standard sub-folder."""
    base = tmp_path_factory.mktemp("lemore_data")
    for name in fixtures.BUILDERS:
        if not (base / fixtures.DEFAULT_SUBDIRS[name]).exists():
            fixtures.make_tree(base, name)
    return base


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small generated synthetic dataset (12 train / 4 val)."""
    from lemore.data.synthetic import generate

    return generate(tmp_path_factory.mktemp("synthetic") / "synthetic", num_train=12, num_val=4, seed=0)
