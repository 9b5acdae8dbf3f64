"""Moved to :mod:`bridgeattn.weights.checkpoint`; this path works until the next release."""
from .._moved import moved
from ..weights.checkpoint import *  # noqa: F403

moved(__name__, "bridgeattn.weights.checkpoint")
