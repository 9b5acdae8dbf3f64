"""One module per ``bridgeattn`` command: ``add_arguments(parser)`` and ``run(args) -> int``."""
