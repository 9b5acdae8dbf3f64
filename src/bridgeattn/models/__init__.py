"""Model families. Importing this package registers every model with timm."""
from . import resnet  # noqa: F401
from .registry import list_models, model_families

__all__ = ["list_models", "model_families"]
