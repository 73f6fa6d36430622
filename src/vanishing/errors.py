"""Errors caused by the user's input: the CLI prints them as one line and exits 2."""


class UsageError(ValueError):
    """A wrong option, value or file given by the user; the message says how to fix it."""


class DataError(UsageError):
    """A data set that cannot be found, read or verified."""


def choices_error(what: str, value: object, choices: "list[str] | tuple[str, ...]") -> UsageError:
    """The standard message for a value outside a fixed set of names."""
    return UsageError(f"unknown {what} {value!r}; choose from: {', '.join(choices)}")


def brief(value: object) -> str:
    """A value as a message quotes it (its repr), but an integer too long to print whole (over
    4300 digits Python refuses to) or to read (a width of 10**400) by its size instead."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 1000:
        return f"an integer of {value.bit_length()} bits"
    return repr(value)
