"""Shared fixtures for the engine tests: a small synthetic dataset and a tiny, fast run config."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from lemore.config import RunCfg, load

#: Tiny runs: 64x64 crops, batch 2, a handful of iterations, no workers, W&B off, CPU.
TINY = {
    "data.crop_size": (64, 64),
    "data.scale": (128, 64),  # validation images are resized to a short side of 64
    "data.num_workers": 0,
    "train.batch_size": 2,
    "train.iters": 4,
    "train.warmup_iters": 0,
    "train.lr": 2e-3,
    "train.log_interval": 1,
    "train.eval_interval": 1000,
    "train.ckpt_interval": 2,
    "train.device": "cpu",
    "wandb": "disabled",
}


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: on a small shared CPU, OpenMP threads that wait for each other make a tiny model
    10x slower than one thread. Child processes inherit it through ``subprocess_env``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """8 training and 4 validation images of the synthetic dataset, generated once per session."""
    from lemore.data.synthetic import ensure_synthetic

    return ensure_synthetic(tmp_path_factory.mktemp("data") / "synthetic", num_train=8, num_val=4)


@pytest.fixture
def tiny_cfg(synthetic_root, tmp_path):
    """``tiny_cfg(**overrides)`` -> a synthetic RunCfg whose runs go under ``tmp_path/runs``."""

    def make(**overrides) -> RunCfg:
        values = {**TINY, "data.root": str(synthetic_root), "out_dir": str(tmp_path / "runs"), **overrides}
        return load(dataset="synthetic", overrides=values)

    return make


@pytest.fixture
def subprocess_env() -> dict[str, str]:
    """Environment for child processes: the package importable, W&B quiet, no inherited torchrun variables."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                              "MASTER_PORT")}
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    # Same thread count as this process: CPU kernels may sum in another order with another count.
    env.update(WANDB_SILENT="true", WANDB_MODE="disabled", OMP_NUM_THREADS=str(torch.get_num_threads()))
    return env
