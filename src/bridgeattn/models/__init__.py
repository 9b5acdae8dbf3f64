"""Model families. Importing this package registers every model with timm."""
from . import resnet  # noqa: F401
from .baselines import EXTRA_BASELINE_MODELS  # noqa: F401  (registers fca_, ca_, srm_)
from .convnext import BRIDGE_CONVNEXTS  # noqa: F401  (registers bav2_convnext_tiny)
from .efficientnet import BRIDGE_EFFICIENTNETS  # noqa: F401
from .mobilenetv3 import BRIDGE_MOBILENETV3  # noqa: F401
from .registry import list_models, model_families
from .regnet import BRIDGE_REGNETS  # noqa: F401
from .swin import BRIDGE_SWINS  # noqa: F401

__all__ = ["list_models", "model_families"]
