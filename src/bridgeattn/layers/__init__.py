"""Channel-attention baselines timm lacks (FcaNet, Coordinate Attention, SRM, GCNet's block), in timm's
constructor vocabulary: each takes ``channels`` first (as ``timm.layers.create_attn`` passes it), maps
``(B, C, H, W)`` to the same shape, and can be given to a timm block as ``attn_layer``. The bridge gate itself is
:mod:`bridgeattn.layers.bridge`.
"""
from .coord import CoordAttention
from .fca import FCA_TOP_FREQUENCIES, FcaModule, dct_filters
from .gc import GlobalContextBlock
from .srm import SrmModule

__all__ = ["CoordAttention", "FCA_TOP_FREQUENCIES", "FcaModule", "GlobalContextBlock", "SrmModule", "dct_filters"]
