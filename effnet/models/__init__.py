"""Model families. ``build_model(name, ...)`` and ``available()``; importing registers the variants."""
from effnet.models import efficientnet  # noqa: F401  (registers efficientnet-b0 ... b7)
from effnet.models.registry import available, build_model, native_size

__all__ = ["available", "build_model", "native_size"]
