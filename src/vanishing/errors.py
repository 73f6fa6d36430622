"""Errors caused by the user's input: the CLI prints them as one line and exits 2."""


class UsageError(ValueError):
    """A wrong option, value or file given by the user; the message says how to fix it."""


class DataError(UsageError):
    """A data set that cannot be found, read or verified."""


def choices_error(what: str, value: object, choices: "list[str] | tuple[str, ...]") -> UsageError:
    """The standard message for a value outside a fixed set of names."""
    return UsageError(f"unknown {what} {value!r}; choose from: {', '.join(choices)}")
