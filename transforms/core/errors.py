"""The one exception users are meant to read: bad input or bad options, never a bug."""


class UserInputError(ValueError):
    """Bad input or options, with a message naming the file, row, column or flag.

    The CLI prints the message alone (no traceback) and exits with status 2. The
    class name marks the message inside a runner's wrapped worker error too.
    """
