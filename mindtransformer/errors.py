"""The one error type for bad user input (files, flags, settings).

Entry points catch it and print its message as a single line with a non-zero exit, so every
message must name the file or field, say what is wrong and say how to fix it.
"""


class UserInputError(ValueError):
    """Bad input from the user: a file, a flag or a setting. The message is one line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


def first_line(err: BaseException, limit: int = 200) -> str:
    """The first line of a framework's (often multi-line) exception message, for a one-line error."""
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:limit]


def closest_name(name: str, choices) -> str:
    """A hint like " (did you mean 'masked_lm'?)" for a misspelled choice, or ""."""
    import difflib

    match = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f" (did you mean '{match[0]}'?)" if match else ""


class CollectiveError(RuntimeError):
    """A data-parallel collective failed (a rank died or stopped answering). One line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
