"""Moved to :mod:`bridgeattn.engine.plots`; this path works until the next release."""
from ._moved import moved
from .engine.plots import *  # noqa: F403

moved(__name__, "bridgeattn.engine.plots")
