"""The one exception type for mistakes in what the user asked for."""


class UserError(ValueError):
    """Bad input from the user (unknown model, missing path, contradictory flags, ...): the command line prints
    its message as one line and exits with status 2, without a traceback."""


def preview_keys(keys: list[str], limit: int = 8) -> str:
    """The first ``limit`` keys, comma-separated, and how many more: for one-line mismatch messages."""
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message (its type name when it has none): for one-line ``UserError`` texts."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
