"""Moved to :mod:`bridgeattn.weights.hub`; this path works until the next release."""
from ._moved import moved
from .weights.hub import *  # noqa: F403

moved(__name__, "bridgeattn.weights.hub")
