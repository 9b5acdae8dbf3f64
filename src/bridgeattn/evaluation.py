"""Moved to :mod:`bridgeattn.tools.score`; this path works until the next release."""
from ._moved import moved
from .tools.score import *  # noqa: F403

moved(__name__, "bridgeattn.tools.score")
