"""The one exception type the engine raises for problems a user can fix."""


class CaduceusError(Exception):
    """A user-facing error: the message alone must tell what is wrong and what to do.

    ``cli.py`` prints ``str(error)`` on one line and exits with ``exit_code``.
    """

    exit_code = 1

    def __init__(self, message: str, *, exit_code: int | None = None):
        super().__init__(" ".join(message.split()) if "\n" in message else message)
        if exit_code is not None:
            self.exit_code = exit_code
