"""Moved to :mod:`bridgeattn.layers.bridge`; this path works until the next release."""
from ._moved import moved
from .layers.bridge import *  # noqa: F403

moved(__name__, "bridgeattn.layers.bridge")
