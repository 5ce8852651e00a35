"""What a command can end with: the exit codes scripts rely on, and the one-line error on stderr."""

import re

# Stable exit codes (docs/REFERENCE.md "The ec2cl client"). Once connected, `ec2cl ssh` exits with ssh's own code.
OK = 0
REFUSED = 1  # the API refused (any 4xx or 5xx, unknown names included), or a check failed
USAGE = 2  # usage: a bad option or argument, an ambiguous name, a name already taken
UNREACHABLE = 3  # the API could not be reached (or the connection dropped and stayed down)
TIMED_OUT = 4  # a wait (--wait, ssh's) ran out of time


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def clean(text: str) -> str:
    """Text from the API as the terminal gets it: a control character (an escape sequence that retitles the window
    or moves the cursor) is shown as its escape, never sent."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


class CliError(Exception):
    """A command's failure: printed as one line on stderr (`ec2cl: <code>: <message>`), then exit `exit_code`."""

    def __init__(self, message: str, exit_code: int = REFUSED, code: str | None = None) -> None:
        super().__init__(message)
        self.message, self.exit_code, self.code = message, exit_code, code

    def line(self) -> str:
        return clean(f"ec2cl: {self.code}: {self.message}" if self.code else f"ec2cl: {self.message}")
