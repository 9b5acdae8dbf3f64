"""Moved to :mod:`bridgeattn.tools.explain`; this path works until the next release."""
from ._moved import moved
from .tools.explain import *  # noqa: F403

moved(__name__, "bridgeattn.tools.explain")
