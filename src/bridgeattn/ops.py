"""Moved to :mod:`bridgeattn.layers.ops`; this path works until the next release."""
from ._moved import moved
from .layers.ops import *  # noqa: F403

moved(__name__, "bridgeattn.layers.ops")
