"""`trainkit <command> [overrides]`: the command-line shell over trainkit's library.

It picks the command (table.py), reads the line and loads the plugins it names (line.py), composes the config as
Hydra will and checks every value before anything is written (compose.py), claims the run directory (rundir.py) and
runs the command under Hydra (hydra_app.py); shell completion is completion.py. An error reaches the user as one
paragraph on standard error, with the exit code of trainkit.errors.EXIT_CODES (failure.py).

`trainkit --help` imports neither torch nor Hydra: a command's modules are imported only when it runs.
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any

from trainkit.cli.table import COMMANDS, split_command, usage

CHECK_FLAG = "--check"  # compose and check the line (every job of a sweep) and run nothing


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    _never_fail_on_encoding()
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage(), end="")
        return 0
    if args[0] in ("-V", "--version"):
        from trainkit.version import __version__

        print(f"trainkit {__version__}")
        return 0
    if args[0] in ("-sc", "--shell-completion"):
        from trainkit.cli.completion import completion_command

        completed = completion_command(args)
        if completed is None:
            return 0
        args = completed
    found = split_command(args)
    if found is None:
        print(f"error: unknown command {args[0]!r}; the commands are: {', '.join(COMMANDS)}.\n", file=sys.stderr)
        print(usage(), end="", file=sys.stderr)
        return 2
    from trainkit.cli.failure import say

    name, rest = found
    previous = _stop_on_sigterm()
    try:
        return _run(name, rest, sys.argv[0] if argv is None else "trainkit")
    except (Exception, KeyboardInterrupt) as exc:  # trainkit's own errors, and every other one as one paragraph
        from trainkit.cli.failure import explain

        return say(explain(exc, doing=f"trainkit {name}"))
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _never_fail_on_encoding() -> None:
    """A message with a character the terminal's encoding lacks (LANG=C, PYTHONIOENCODING=ascii) is printed with
    that character escaped (`\\xe9`), rather than ending the command in a UnicodeEncodeError."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="backslashreplace")  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):  # not a text file of the io module (a test's capture)
            pass


def _stop_on_sigterm() -> Any:
    """SIGTERM ends any command within moments, as Ctrl-C does, through the same clean-up: what the command made and
    did not finish is removed, and it exits 143 (a training run replaces this with its own handler, which saves
    first). A second SIGTERM ends the process at once. The previous handler, to restore; None off the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def stop(signum: int, frame: Any) -> None:
        from trainkit.errors import Stopped

        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise Stopped("stopped by SIGTERM.")

    return signal.signal(signal.SIGTERM, stop)


def _run(name: str, rest: list[str], prog: str) -> int:
    from trainkit.cli import line
    from trainkit.cli.table import load_target

    inv = line.read(name, rest)
    if inv.command.config is None:
        return int(load_target(inv.command.target)(inv.args) or 0)
    from trainkit.cli import compose, hydra_app, rundir

    check_only = CHECK_FLAG in inv.args
    inv.args = [a for a in inv.args if a != CHECK_FLAG]
    compose.preflight(inv)
    if check_only:
        print(f"{' '.join(a for a in inv.line if a != CHECK_FLAG)}: checked{' every job' * inv.multirun}; nothing was "
              f"run or written.")
        return 0
    hydra_app.run(rundir.claim_run_dir(inv), prog)
    return 0
