"""The one exception type for mistakes in what the user asked for."""


class UserError(ValueError):
    """Bad input from the user (unknown model, missing path, contradictory flags, ...).

    The command line prints its message as one line and exits with status 2, without a traceback.
    """
