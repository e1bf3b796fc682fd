"""The one base of every error that is meant for a person rather than a traceback, and trainkit's exit codes.

The CLI prints an error's message as one paragraph on standard error and exits with its code; each subclass lives
beside the code that raises it. The exit codes are documented for users in docs/troubleshooting.md ("Exit codes"),
which a test keeps equal to this table.
"""

EXIT_CODES = {
    "ok": 0,  # the command did what it was asked
    "error": 1,  # an error trainkit explains: a bad value, bad data, a failed or diverged run, a sweep job that failed
    "usage": 2,  # a line that cannot be read: an unknown command, key or option, a malformed override
    "restart": 75,  # EX_TEMPFAIL: a data-parallel process that torch elastic restarts (inside trainer.devices=N)
    "sigint": 130,  # stopped by Ctrl-C (SIGINT) after saving a checkpoint to resume from
    "sigterm": 143,  # stopped by SIGTERM or SLURM's SIGUSR1 warning after saving (a SLURM job requeues itself)
}


class UserError(Exception):
    """Bad input, config or state the user can fix. The message names the file or key, and the fix."""

    keeps_run_dir = False  # an error before any result: the half-made run directory is removed
    exit_code = EXIT_CODES["error"]


class ConfigError(UserError):
    """A config value that cannot work. The message names the key and the fix."""


class UsageError(UserError):
    """A command line that cannot be read: an unknown key or option, a malformed override. Exit code 2."""

    exit_code = EXIT_CODES["usage"]
