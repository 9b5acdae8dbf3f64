"""Moved to :mod:`bridgeattn.weights.loading`; this path works until the next release."""
from ._moved import moved
from .weights.loading import *  # noqa: F403

moved(__name__, "bridgeattn.weights.loading")
