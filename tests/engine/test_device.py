"""The engine's device choices on CPU: channels_last for the models measured faster in it (a fixed table)."""

from __future__ import annotations

import pytest

from lemore.engine import train as T


@pytest.mark.parametrize("name,classes,expected", [
    ("lemore", 8, True), ("lemore_star", 19, True), ("lemore_tfl_ca_na", 60, True), ("lemore", 100, True),
    ("lemore", 150, False), ("lemore", 171, False),  # the loss on channels_last logits eats the gain
    ("segformer_b0", 8, False), ("lraspp_mobilenet_v3_large", 8, False), ("topformer_t", 8, False),  # not measured
])
def test_cpu_channels_last_table(name, classes, expected):
    assert T.cpu_channels_last(name, classes) is expected


@pytest.mark.parametrize("overrides,layout", [
    ({}, True),  # lemore, 8 classes: channels_last
    ({"train.channels_last": False}, False),  # switched off
    ({"model.name": "segformer_b0"}, False),  # no gain measured: NCHW
])
def test_training_on_cpu_uses_the_table(tiny_cfg, overrides, layout):
    run_dir = T.train(tiny_cfg(**{"train.iters": 1, **overrides}))
    line = next(ln for ln in (run_dir / "train.log").read_text().splitlines() if "world x accum x micro" in ln)
    assert ("channels_last" in line) is layout and "on cpu" in line
