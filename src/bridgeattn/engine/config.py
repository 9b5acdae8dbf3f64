"""Moved to :mod:`bridgeattn.config`; this path works until the next release."""
from .._moved import moved
from ..config import *  # noqa: F403
from ..config import __all__  # noqa: F401

moved(__name__, "bridgeattn.config")
