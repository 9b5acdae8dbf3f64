"""Moved to :mod:`bridgeattn.weights.convert`; this path works until the next release."""
from ._moved import moved
from .weights.convert import *  # noqa: F403

moved(__name__, "bridgeattn.weights.convert")
