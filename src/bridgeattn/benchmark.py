"""Moved to :mod:`bridgeattn.tools.benchmark`; this path works until the next release."""
from ._moved import moved
from .tools.benchmark import *  # noqa: F403

moved(__name__, "bridgeattn.tools.benchmark")
