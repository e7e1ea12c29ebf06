"""build_loader: batches, seeded shuffling, workers, and the DistributedSampler branch."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler, RandomSampler, SequentialSampler

from lemore.config import recipe
from lemore.data import build_dataset, build_loader


class Indices(Dataset):
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[int, float]:
        return i, torch.rand(()).item()  # the random draw shows the per-worker seeding


def _epoch(loader) -> list[int]:
    return [int(i) for batch, _ in loader for i in batch]


def test_train_loader_shuffles_reproducibly_and_drops_last():
    a = build_loader(Indices(10), 3, train=True, num_workers=0, seed=1)
    assert isinstance(a.sampler, RandomSampler) and a.drop_last and not a.pin_memory
    first = _epoch(a)
    assert len(first) == 9 and len(set(first)) == 9 and first != sorted(first)
    assert _epoch(build_loader(Indices(10), 3, train=True, num_workers=0, seed=1)) == first
    assert _epoch(build_loader(Indices(10), 3, train=True, num_workers=0, seed=2)) != first
    assert _epoch(a) != first  # the next epoch has a new order


def test_eval_loader_is_sequential_and_complete():
    loader = build_loader(Indices(5), 1, train=False, num_workers=0)
    assert isinstance(loader.sampler, SequentialSampler) and not loader.drop_last
    assert _epoch(loader) == [0, 1, 2, 3, 4]


def test_workers_are_persistent_and_seeded():
    loader = build_loader(Indices(8), 2, train=True, num_workers=2, seed=3)
    assert loader.persistent_workers and loader.num_workers == 2
    draws = [float(x) for _, d in loader for x in d]
    again = [float(x) for _, d in build_loader(Indices(8), 2, train=True, num_workers=2, seed=3) for x in d]
    assert draws == again and len(set(draws)) == len(draws)


def test_segmentation_batches(synthetic_root):
    cfg = replace(recipe("synthetic").data, root=str(synthetic_root))
    loader = build_loader(build_dataset(cfg, "train"), 4, train=True, num_workers=1)
    images, masks = next(iter(loader))
    assert images.shape == (4, 3, 128, 128) and images.dtype == torch.float32
    assert masks.shape == (4, 128, 128) and masks.dtype == torch.int64
    val = build_loader(build_dataset(cfg, "val"), 1, train=False, num_workers=0)
    image, mask = next(iter(val))
    assert image.shape[0] == mask.shape[0] == 1


@pytest.fixture
def process_group(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_distributed_sampler(process_group):
    loader = build_loader(Indices(10), 2, train=True, num_workers=0, distributed=True, seed=4)
    assert isinstance(loader.sampler, DistributedSampler) and loader.sampler.shuffle
    loader.sampler.set_epoch(0)
    e0 = _epoch(loader)
    loader.sampler.set_epoch(1)
    e1 = _epoch(loader)
    assert sorted(e0) == sorted(e1) == list(range(10)) and e0 != e1
    loader.sampler.set_epoch(0)
    assert _epoch(loader) == e0
    evaluation = build_loader(Indices(5), 1, train=False, num_workers=0, distributed=True)
    assert not evaluation.sampler.shuffle and _epoch(evaluation) == [0, 1, 2, 3, 4]
