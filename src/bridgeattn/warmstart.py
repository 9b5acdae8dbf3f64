"""Moved to :mod:`bridgeattn.models.warmstart` (the per-block rule) and :mod:`bridgeattn.weights.warmstart`
(``from_plain``); this path works until the next release."""
from ._moved import moved
from .models.warmstart import *  # noqa: F403
from .weights.warmstart import from_plain, load_plain  # noqa: F401

moved(__name__, "bridgeattn.models.warmstart and bridgeattn.weights.warmstart")
