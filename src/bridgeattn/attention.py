"""Moved to :mod:`bridgeattn.layers`; this path works until the next release."""
from ._moved import moved
from .layers import *  # noqa: F403

moved(__name__, "bridgeattn.layers")
