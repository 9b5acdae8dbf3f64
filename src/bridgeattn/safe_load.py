"""Moved to :mod:`bridgeattn.weights.safe_load`; this path works until the next release."""
from ._moved import moved
from .weights.safe_load import *  # noqa: F403

moved(__name__, "bridgeattn.weights.safe_load")
