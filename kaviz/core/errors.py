"""The errors kaviz reports to a user: one base class, so that the CLI, the launcher and the app
print these as one clear line and let anything else (a bug) show its traceback."""

from __future__ import annotations


class KavizError(Exception):
    """Base of every user-facing error: bad config, data, store, model or launch. The message names
    the offending value and what was expected."""


class ConfigError(KavizError, ValueError):
    """A configuration that cannot run. ``problems`` lists (field, message) pairs, one per bad field;
    ``str(error)`` joins them under "invalid config:"."""

    def __init__(self, message: str | None = None, problems: list[tuple[str, str]] | None = None):
        self.problems: list[tuple[str, str]] = list(problems or [])
        if message is None:
            message = "invalid config:\n  - " + "\n  - ".join(f"{f}: {m}" if f else m for f, m in self.problems)
        elif not self.problems:
            self.problems = [("", message)]
        super().__init__(message)

    def lines(self) -> list[str]:
        """One readable line per problem ("field: message")."""
        return [f"{f}: {m}" if f else m for f, m in self.problems]
