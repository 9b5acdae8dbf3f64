"""Moved to :mod:`bridgeattn.tools.compare`; this path works until the next release."""
from ._moved import moved
from .tools.compare import *  # noqa: F403

moved(__name__, "bridgeattn.tools.compare")
