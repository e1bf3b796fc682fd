"""`trainkit <command> [overrides]`: the command-line shell over trainkit's library.

It picks the command (table.py), reads the line and loads the plugins it names (line.py), composes the config as
Hydra will and checks every value before anything is written (compose.py), claims the run directory (rundir.py) and
runs the command under Hydra (hydra_app.py); shell completion is completion.py. An error reaches the user as one
paragraph on standard error, with the exit code of trainkit.errors.EXIT_CODES (failure.py).

`trainkit --help` imports neither torch nor Hydra: a command's modules are imported only when it runs.
"""

from __future__ import annotations

import sys

from trainkit.cli.table import COMMANDS, split_command, usage


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
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
        print(f"trainkit: unknown command {args[0]!r}; the commands are: {', '.join(COMMANDS)}.\n", file=sys.stderr)
        print(usage(), end="", file=sys.stderr)
        return 2
    from trainkit.cli.failure import say
    from trainkit.errors import UserError

    name, rest = found
    try:
        return _run(name, rest, sys.argv[0] if argv is None else "trainkit")
    except UserError as exc:
        return say(exc)


def _run(name: str, rest: list[str], prog: str) -> int:
    from trainkit.cli import line
    from trainkit.cli.table import load_target

    inv = line.read(name, rest)
    if inv.command.config is None:
        return int(load_target(inv.command.target)(inv.args) or 0)
    from trainkit.cli import compose, hydra_app, rundir

    compose.preflight(inv)
    hydra_app.run(rundir.claim_run_dir(inv), prog)
    return 0
