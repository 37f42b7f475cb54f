"""Errors in what the user gave us (paths, data, configs), shown as one line, no traceback."""


class UserInputError(ValueError):
    """The message says what was found and what to do; the command line prints only it."""


class MissingFile(UserInputError, FileNotFoundError):
    """A file or folder the user named (or a config points at) is not there. Also a
    FileNotFoundError for code that catches those; a UserInputError so that it is one line
    wherever it is raised, also inside a class LightningCLI builds."""


def first_line(error: BaseException) -> str:
    """The first line of an error's message ("" when it has none): libraries' messages run
    to paragraphs, and ours are one line."""
    text = str(error).strip()
    return text.splitlines()[0] if text else ""


def user_error_within(error: BaseException) -> UserInputError | None:
    """The UserInputError that `error` wraps, if any: jsonargparse re-raises what a class
    raises while it instantiates it as a ValueError about union subtypes, its cause chained."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, UserInputError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def require_positive(owner: str, **values: float) -> None:
    """One line naming each size or rate that must be above zero (and finite)."""
    for name, value in values.items():
        if not (value > 0 and value != float("inf")):
            raise UserInputError(f"{owner}.{name} must be a positive number, got {value}")
