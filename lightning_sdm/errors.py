"""Errors in what the user gave us (paths, data, configs), shown as one line, no traceback."""


class UserInputError(ValueError):
    """The message says what was found and what to do; the command line prints only it."""
