"""Channel-attention baselines timm lacks, with timm's constructor vocabulary.

Every module takes ``channels`` first (as ``timm.layers.create_attn`` passes it), maps ``(B, C, H, W)``
to the same shape, and can be given to a timm block as ``attn_layer``.

- :class:`FcaModule`: FcaNet multi-spectral channel attention (Qin et al., ICCV 2021).
- :class:`CoordAttention`: Coordinate Attention (Hou et al., CVPR 2021); timm's ``CoordAttn`` with the paper's
  defaults.
- :class:`SrmModule`: SRM style-based recalibration (Lee et al., ICCV 2019).
- :class:`GlobalContextBlock`: GCNet's global context block (Cao et al., 2019); timm's ``GlobalContext`` with
  GCNet's additive fusion and r = 1/16.
"""
from .coord import CoordAttention
from .fca import FCA_TOP_FREQUENCIES, FcaModule, dct_filters
from .gc import GlobalContextBlock
from .srm import SrmModule

__all__ = ["CoordAttention", "FCA_TOP_FREQUENCIES", "FcaModule", "GlobalContextBlock", "SrmModule", "dct_filters"]
