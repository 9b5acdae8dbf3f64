"""Moved to :mod:`bridgeattn.models.detection`; this path works until the next release."""
from ._moved import moved
from .models.detection import *  # noqa: F403

moved(__name__, "bridgeattn.models.detection")
