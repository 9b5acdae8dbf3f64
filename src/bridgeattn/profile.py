"""Moved to :mod:`bridgeattn.tools.profile`; this path works until the next release."""
from ._moved import moved
from .tools.profile import *  # noqa: F403

moved(__name__, "bridgeattn.tools.profile")
