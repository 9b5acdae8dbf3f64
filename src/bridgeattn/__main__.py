"""``python -m bridgeattn`` (also what ``torchrun -m bridgeattn train ...`` runs)."""
import sys

from .cli.main import main

sys.exit(main())
