"""Model registry: a dict of names to real builder functions (timm's pattern, without the magic).

Builders are plain functions with real signatures; ``create_model(name, num_classes=..., **overrides)``
looks one up and calls it; ``build_model(cfg)`` builds the model a run config names. Registration happens in
``lemore/models/__init__.py`` on ``import lemore``.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, Callable

import torch.nn as nn

if TYPE_CHECKING:
    from lemore.config import RunCfg

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


def build_model(cfg: RunCfg) -> nn.Module:
    """The model of a run config: ``create_model(cfg.model.name, num_classes=cfg.data.num_classes)``; models that are
    built for an input size (LeMoRe's view matrices) get ``img_size=cfg.data.crop_size``.

    Raises:
        ConfigValueError: an unknown ``model.name`` (the message lists the registered ones).
    """
    import lemore.models  # noqa: F401  (registers the models)
    from lemore.config import ConfigValueError

    if cfg.model.name not in MODELS:
        raise ConfigValueError(f"unknown model.name {cfg.model.name!r}; choose from {sorted(MODELS)}")
    kwargs: dict[str, Any] = {}
    if "img_size" in inspect.signature(MODELS[cfg.model.name]).parameters:
        kwargs["img_size"] = tuple(cfg.data.crop_size)
    return create_model(cfg.model.name, num_classes=cfg.data.num_classes, **kwargs)
