"""`bridgeattn <command>`: the argument helpers and one module per command (`commands/`)."""
from .main import main

__all__ = ["main"]
