"""Moved to :mod:`bridgeattn.tools.demo`; this path works until the next release."""
from .._moved import moved
from ..tools.demo import *  # noqa: F403

moved(__name__, "bridgeattn.tools.demo")
