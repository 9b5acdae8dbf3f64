"""Model families. Importing this package registers every model with timm (see ``entrypoints``)."""
from . import entrypoints  # noqa: F401  (registers the models)
from .registry import list_models, model_families

__all__ = ["list_models", "model_families"]
