"""Errors that the CLI reports in one line (exit 2)."""


class UsageError(ValueError):
    """Bad input from the user: names the value, what is allowed and the fix."""
