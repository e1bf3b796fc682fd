"""The one base of every error that is meant for a person rather than a traceback.

The CLI prints its message as one paragraph and exits 1; each subclass lives beside the code that raises it.
"""


class UserError(Exception):
    """Bad input, config or state the user can fix. The message names the file or key, and the fix."""

    keeps_run_dir = False  # an error before any result: the half-made run directory is removed


class ConfigError(UserError):
    """A config value that cannot work. The message names the key and the fix."""


class UsageError(UserError):
    """A command line that cannot be read: an unknown key or option, a malformed override. Exit code 2."""

    exit_code = 2
