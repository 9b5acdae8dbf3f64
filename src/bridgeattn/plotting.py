"""Moved to :mod:`bridgeattn.engine.plotting`; this path works until the next release."""
from ._moved import moved
from .engine.plotting import *  # noqa: F403

moved(__name__, "bridgeattn.engine.plotting")
