"""Moved to :mod:`bridgeattn.layers.freeze`; this path works until the next release."""
from ._moved import moved
from .layers.freeze import *  # noqa: F403

moved(__name__, "bridgeattn.layers.freeze")
