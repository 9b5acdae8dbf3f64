"""Moved to :mod:`bridgeattn.weights.export`; this path works until the next release."""
from ._moved import moved
from .weights.export import *  # noqa: F403

moved(__name__, "bridgeattn.weights.export")
