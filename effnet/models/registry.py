"""A registry of model builders by name (``efficientnet-b0`` ...), as in timm."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import keras


@dataclass(frozen=True)
class ModelEntry:
    """A registered builder and the resolution the variant was designed for."""

    builder: Callable[..., keras.Model]
    native_size: int


_REGISTRY: dict[str, ModelEntry] = {}


def register(name: str, builder: Callable[..., keras.Model], native_size: int) -> None:
    """Register ``builder`` under ``name``."""
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is already registered")
    _REGISTRY[name] = ModelEntry(builder, native_size)


def available() -> list[str]:
    """Names of every registered model, sorted."""
    return sorted(_REGISTRY)


def entry(name: str) -> ModelEntry:
    """The registry entry of ``name``; a clear error listing the choices otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(available())}") from None


def native_size(name: str) -> int:
    """The image size the variant was designed for (224 for B0 ... 600 for B7)."""
    return entry(name).native_size


def build_model(name: str, num_classes: int = 1000, image_size: int | None = None, **overrides) -> keras.Model:
    """Build model ``name``: float [0, 255] NHWC images in, float32 logits out.

    ``image_size=None`` means the variant's native resolution. ``overrides`` are the
    builder's options (dropout, drop_connect, activation, batch_norm, weight_init,
    bn_momentum, zero_init_residual, include_top, pooling, any_size).
    """
    return entry(name).builder(num_classes=num_classes, image_size=image_size, **overrides)
