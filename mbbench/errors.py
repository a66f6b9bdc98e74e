"""Exceptions that carry a message meant for the user (the CLI prints them on one line, exit 2)."""


class UserError(Exception):
    """A bad input: unknown name, malformed file, impossible option. Shown as-is to the user."""


class BackendUnavailable(UserError):
    """An attention backend was asked for explicitly but cannot run here."""

