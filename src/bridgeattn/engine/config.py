"""The training configuration, under the name it had first; it lives in ``bridgeattn.config`` (no torch)."""
from ..config import *  # noqa: F403
from ..config import __all__  # noqa: F401
