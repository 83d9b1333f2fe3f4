"""User-facing errors: one clear line and a hint, never a traceback."""

from __future__ import annotations


class LlmstError(Exception):
    """An error the user can fix. The CLI prints `message` (and `hint`) and exits with `exit_code`."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"


class ConfigError(LlmstError):
    """Bad option, unknown task, unknown model, unreadable input."""


class BackendError(LlmstError):
    """The model backend could not answer (server unreachable after retries, model failed to load)."""

    exit_code = 3
