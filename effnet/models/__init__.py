"""Model families. ``build_model(name, ...)`` and ``available()``; importing registers the variants."""
from effnet.models import efficientnet, efficientnet_v2  # noqa: F401  (register efficientnet-b0 ..., efficientnetv2-*)
from effnet.models.registry import available, build_model, native_size

__all__ = ["available", "build_model", "native_size"]
