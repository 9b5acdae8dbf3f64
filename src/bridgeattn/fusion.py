"""Moved to :mod:`bridgeattn.layers.fusion`; this path works until the next release."""
from ._moved import moved
from .layers.fusion import *  # noqa: F403

moved(__name__, "bridgeattn.layers.fusion")
