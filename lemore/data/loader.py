"""How many DataLoader worker processes a run gets: a question of the machine, not of the model.

:func:`loader_workers` is what the engine asks (training and evaluation loaders). Nothing here imports the engine or
the tools built on it (``tests/test_layers.py``).
"""

from __future__ import annotations

import torch

from lemore.system import available_cores


def loader_workers(requested: int, device: torch.device, cached: bool = False) -> int:
    """DataLoader worker processes for ``data.num_workers = requested`` on ``device``.

    On CUDA, as requested. On CPU the workers share the cores with the compute threads (``torch.get_num_threads()``):
    a worker that takes a core from a compute thread stalls every parallel region of the step (the other threads
    wait for it at the region's end), so a millisecond of augmentation costs the step more than a millisecond. So at
    most the cores the threads leave free, and none when they take them all: the main process then augments each
    batch between two steps, on all its cores. 0 also for a split held in memory whose samples need no augmentation
    (evaluation: a worker would only add its start-up). Samples do not depend on the workers (each is seeded by its
    place in the schedule), so this changes the speed only. ``python benchmarks/engine_throughput.py --workers-ab``
    (the two settings alternated in one process; results/benchmarks/loader_workers_ab.md; AMD EPYC Zen 4, 2 cores,
    2 threads, the CamVid recipe): without a worker LeMoRe 4.40 iterations/s against 3.87 with one (+14%),
    TopFormer-T +34%, LR-ASPP +5%, SeaFormer-T +4%, SegFormer-B0 +1%.
    """
    if device.type != "cpu":
        return requested
    if cached:
        return 0
    return max(0, min(requested, available_cores() - torch.get_num_threads()))
