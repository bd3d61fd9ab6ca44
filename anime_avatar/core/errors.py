"""Errors a user can cause, reported as one clear message instead of a traceback."""


class UserError(Exception):
    """Bad input, params or environment: the message says what is wrong and how to fix it."""


class ParamsError(UserError):
    """A key of params.yaml is unknown or holds a bad value."""


class ValidationFailed(UserError):
    """A data-validation expectation failed."""


def first_line(err: BaseException, limit: int | None = None) -> str:
    """The first line of an error's message (its type's name when it has none), at most ``limit`` characters: a
    library's multi-line error, fit for a one-line message."""
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:limit]
