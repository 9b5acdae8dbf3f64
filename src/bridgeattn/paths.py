"""Moved to :mod:`bridgeattn.files`; this path works until the next release."""
from ._moved import moved
from .files import cache_dir  # noqa: F401

moved(__name__, "bridgeattn.files")
