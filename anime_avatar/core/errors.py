"""Errors a user can cause, reported as one clear message instead of a traceback."""


class UserError(Exception):
    """Bad input, params or environment: the message says what is wrong and how to fix it."""


class ParamsError(UserError):
    """A key of params.yaml is unknown or holds a bad value."""


class ValidationFailed(UserError):
    """A data-validation expectation failed."""
