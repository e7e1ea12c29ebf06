"""Model registry: a dict of names to real builder functions (timm's pattern, without the magic).

Builders are plain functions with real signatures; ``create_model(name, num_classes=..., **overrides)``
looks one up and calls it. Registration happens in ``lemore/models/__init__.py`` on ``import lemore``.
"""

from __future__ import annotations

from typing import Callable

import torch.nn as nn

MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Decorator: register ``fn`` under its own name."""
    name = fn.__name__
    if name in MODELS:
        raise ValueError(f"model {name!r} is registered twice")
    MODELS[name] = fn
    return fn


def list_models() -> list[str]:
    """Every registered model name, sorted."""
    return sorted(MODELS)


def create_model(name: str, num_classes: int = 150, **overrides) -> nn.Module:
    """Build a registered model.

    Args:
        name: one of :func:`list_models`.
        num_classes: output classes (1000 for the ImageNet classifier).
        **overrides: builder keyword arguments, e.g. ``img_size=(512, 1024)`` or ``lateral=False`` for LeMoRe.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {list_models()}")
    return MODELS[name](num_classes=num_classes, **overrides)
