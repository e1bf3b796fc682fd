"""How a failed line ends: its error as one paragraph on standard error (`error: ...`, or `stopped: ...` for a run
stopped by a signal after saving), and its exit code (trainkit.errors.EXIT_CODES)."""

from __future__ import annotations

from typing import NoReturn

from rich.console import Console


def errors_console() -> Console:
    """Standard error, for errors and warnings: results go to standard output."""
    return Console(stderr=True, highlight=False, soft_wrap=True)


def say(exc: BaseException) -> int:
    """Print `exc` as one paragraph on standard error; its exit code."""
    code = getattr(exc, "exit_code", 1)
    label = "[bold yellow]stopped:[/bold yellow]" if code in (130, 143) else "[bold red]error:[/bold red]"
    console = errors_console()
    console.print(label, end=" ")
    console.print(str(exc), markup=False, highlight=False, soft_wrap=True)  # a message may hold [brackets]
    return code


def fail(exc: BaseException) -> NoReturn:
    raise SystemExit(say(exc))
