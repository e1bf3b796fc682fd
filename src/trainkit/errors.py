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


class Stopped(UserError):
    """A command stopped by a signal (SIGTERM, Ctrl-C) before it saved anything to resume from: what it made goes,
    and it exits 143 or 130. (A training run stopped after saving is trainkit.engine.signals.Interrupted.)"""

    def __init__(self, message: str, exit_code: int = EXIT_CODES["sigterm"]) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class InternalError(UserError):
    """An exception that trainkit did not expect: a bug. The message names the exception, where it was raised and
    the log file that holds its traceback, and asks for a report; the console never shows the traceback itself."""


def os_error_message(exc: OSError, what: str = "") -> str:
    """An operating system's refusal of a file or folder as one sentence with the fix: `what` names the thing, e.g.
    "the run directory"."""
    import errno

    def cut(text: str) -> str:  # a name too long to use is too long to print whole
        return text if len(text) <= 120 else f"{text[:70]}...{text[-40:]}"

    path = "" if exc.filename is None else cut(str(exc.filename))
    thing = cut(what) if what else path or "a file"
    if what and path and not what.endswith(str(exc.filename)):  # the part of the path that is in the way
        thing += f" ({path})"
    said = exc.strerror or type(exc).__name__
    fixes = {
        errno.ENAMETOOLONG: "a name in that path is longer than the file system allows (255 bytes a folder or file "
                            "name, 4096 a path): choose a shorter one",
        errno.EACCES: "you may not write there: choose a folder you can write to (or change its permissions)",
        errno.EPERM: "you may not write there: choose a folder you can write to (or change its permissions)",
        errno.EROFS: "that file system is read-only: choose a folder on a writable one",
        errno.ENOTDIR: "a part of that path is a file, not a folder: move the file or choose another path",
        errno.EEXIST: "a file of that name is in the way: move it or choose another path",
        errno.EISDIR: "that is a folder where a file is needed: give a file name",
        errno.ENOSPC: "the disk is full: free some space or choose another disk",
        errno.EDQUOT: "your disk quota is used up: free some space or choose another disk",
        errno.ENOENT: "it does not exist: check the path (relative paths start in the working directory)",
    }
    fix = fixes.get(exc.errno or 0, "check the path and its permissions")
    return f"cannot use {thing}: {said}; {fix}."
