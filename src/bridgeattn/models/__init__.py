"""Model families. Importing this package registers every model with timm."""
from . import resnet  # noqa: F401
from .baselines import EXTRA_BASELINE_MODELS  # noqa: F401  (registers fca_, ca_, srm_)
from . import convnext, efficientnet, mobilenetv3, regnet, swin  # noqa: F401  (bav*_ beyond ResNet)
from .registry import list_models, model_families

__all__ = ["list_models", "model_families"]
