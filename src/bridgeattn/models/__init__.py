"""Model families. Importing this package registers every model with timm (see ``entrypoints``)."""
from . import entrypoints  # noqa: F401  (registers the models)
from .registry import create_model, list_models, model_families

__all__ = ["create_model", "list_models", "model_families"]
