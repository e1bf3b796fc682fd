"""How a failed line ends: its error as one paragraph on standard error (`error: ...`, or `stopped: ...` for a run
stopped by a signal), and its exit code (trainkit.errors.EXIT_CODES).

Every exception a command meets ends here as a paragraph (`explain`): trainkit's own errors say what to fix; an
operating system's refusal (a path that cannot be written, a name too long) names the path and the fix; SLURM's
refusal to queue a sweep's jobs is sbatch's own words; Hydra's complaints name the key; anything else is a bug, whose
paragraph names the exception and the log file that keeps its traceback, never the traceback itself.
"""

from __future__ import annotations

import os
import time
import traceback
from pathlib import Path
from typing import NoReturn

from rich.console import Console

from trainkit.errors import EXIT_CODES, InternalError, Stopped, UsageError, UserError, os_error_message

# What the operating system refuses for a reason a person can fix: said with the path, not as a bug.
_OS_ERRNOS = {"ENAMETOOLONG", "EACCES", "EPERM", "EROFS", "ENOTDIR", "EEXIST", "EISDIR", "ENOSPC", "EDQUOT", "ENOENT"}


class LauncherError(UserError):
    """A sweep's launcher could not start its jobs (SLURM's sbatch refused them): said in the launcher's words."""


def errors_console() -> Console:
    """Standard error, for errors and warnings: results go to standard output."""
    return Console(stderr=True, highlight=False, soft_wrap=True)


def say(exc: BaseException) -> int:
    """Print `exc` as one paragraph on standard error; its exit code."""
    exc = explain(exc)
    code = getattr(exc, "exit_code", 1)
    label = "[bold yellow]stopped:[/bold yellow]" if code in (130, 143) else "[bold red]error:[/bold red]"
    console = errors_console()
    console.print(label, end=" ")
    console.print(str(exc), markup=False, highlight=False, soft_wrap=True)  # a message may hold [brackets]
    return code


def fail(exc: BaseException) -> NoReturn:
    code = say(exc)
    # A Ctrl-C that landed inside code run by exec() (dataclasses builds methods so, in torch's lazy imports) leaves
    # CPython's "unhandled KeyboardInterrupt" flag set, and the interpreter then ends by SIGINT whatever exit code is
    # asked for. A successful exec clears the flag, so the code said here (130, 143) is the one the shell sees.
    exec("")  # noqa: S102
    raise SystemExit(code)


def explain(exc: BaseException, log: Path | None = None, doing: str = "trainkit") -> UserError:
    """`exc` as trainkit's error: itself where it is one; else a paragraph that says what failed and what to do.
    `log` is where a bug's traceback goes (it is appended); None: a new file in the system's temporary folder."""
    if isinstance(exc, UserError):
        return exc
    if isinstance(exc, KeyboardInterrupt):
        return Stopped("stopped by Ctrl-C (SIGINT).", EXIT_CODES["sigint"])
    refusal = sbatch_refusal(exc)
    if refusal is not None:
        return LauncherError(refusal)
    if isinstance(exc, OSError) and _errno_name(exc) in _OS_ERRNOS:
        return UserError(os_error_message(exc))
    if isinstance(exc, MemoryError):
        return UserError(f"{doing} ran out of memory: make the batch (data.batch_size) or the model smaller.")
    hydra = hydra_complaint(exc)
    if hydra is not None:
        return hydra
    return bug(exc, log, doing)


def bug(exc: BaseException, log: Path | None = None, doing: str = "trainkit") -> InternalError:
    """An exception trainkit did not expect, as one paragraph: its type, message and place, and the log file that
    keeps its traceback."""
    written = keep_traceback(exc, log)
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    said = " ".join(str(exc).split())[:300]
    kept = f"; its traceback is in {written}" if written is not None else ""
    plugin = _plugin_in(frames)
    whose = (f"It was raised in the plugin module {plugin}, which a user of trainkit wrote: fix it there"
             if plugin else "This is a bug in trainkit, please report it")
    return InternalError(f"{doing} failed on an unexpected {type(exc).__name__}{': ' + said if said else ''}{where}. "
                         f"{whose}{kept}.")


def _plugin_in(frames: list) -> str | None:
    """The loaded plugin module (plugins=[...], an entry point) that the innermost frame of its own is in, if any."""
    import sys

    registry = sys.modules.get("trainkit.registry")
    files = {}
    for name in getattr(registry, "LOADED", {}):
        module = sys.modules.get(name)
        path = getattr(module, "__file__", None)
        if path:
            files[os.path.realpath(path)] = name
    for frame in reversed(frames):
        if os.path.realpath(frame.filename) in files:
            return files[os.path.realpath(frame.filename)]
    return None


def keep_traceback(exc: BaseException, log: Path | None = None) -> Path | None:
    """Append `exc`'s traceback to `log` (or to a new file in the temporary folder); the file, or None where nothing
    could be written."""
    text = "".join(traceback.format_exception(exc))
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    for path in ([log] if log is not None else []) + [None]:
        try:
            if path is None:
                import tempfile

                fd, name = tempfile.mkstemp(prefix=f"trainkit-error-{time.strftime('%Y%m%d-%H%M%S')}-", suffix=".log")
                os.close(fd)
                path = Path(name)
            with open(path, "a", encoding="utf-8", errors="backslashreplace") as f:
                f.write(f"[{stamp}][trainkit][ERROR] - unexpected {type(exc).__name__}:\n{text}")
            return path
        except OSError:
            continue
    return None


def sbatch_refusal(exc: BaseException) -> str | None:
    """SLURM's refusal to queue a sweep's job (submitit raises sbatch's standard error), as a paragraph with the
    setting to change; None if `exc` is something else."""
    import subprocess

    cause = exc.__cause__
    command = getattr(cause, "cmd", None) if isinstance(cause, subprocess.CalledProcessError) else None
    if isinstance(exc, FileNotFoundError) and exc.filename in ("sbatch", "scontrol", "sacct", "squeue"):
        return (f"hydra/launcher=slurm needs SLURM's {exc.filename} command, and there is none on this machine "
                f"(PATH): run the sweep on the cluster's login node, or drop hydra/launcher=slurm to run it here.")
    if type(exc).__name__ != "FailedJobError" or not command or "sbatch" not in os.path.basename(str(command[0])):
        return None
    return explain_sbatch(str(exc))


def explain_sbatch(stderr: str) -> str:
    """sbatch's standard error (`sbatch: error: Batch job submission failed: ...`) as one paragraph with its fix."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    said = " ".join(line.removeprefix("sbatch: error: ").removeprefix("sbatch: ") for line in lines) or "(nothing)"
    low = said.lower()
    hints = [
        (("gres", "gpu"), ("the cluster has no such GPUs: set hydra.launcher.gpus_per_node=null on CPU-only nodes, "
                           "or choose a partition with GPUs (hydra.launcher.partition=NAME)")),
        (("node configuration is not available", "more processors than", "cpu count", "memory specification"),
         ("no node of that partition has what the job asks for: lower hydra.launcher.cpus_per_task, mem_gb, "
          "gpus_per_node or tasks_per_node (sinfo -o '%P %c %m %G' shows what the nodes have)")),
        (("invalid partition",), "that partition does not exist: set hydra.launcher.partition to one that sinfo lists"),
        (("time limit",), "the partition does not allow that time limit: lower hydra.launcher.timeout_min"),
        (("controller", "connect", "slurm_load", "unable to contact", "configuration source", "slurm.conf"),
         ("SLURM's controller (slurmctld) does not answer, or this machine has no SLURM configuration: run the "
          "sweep on the cluster's login node, check that the cluster is up (sinfo), or drop hydra/launcher=slurm")),
        (("account", "qos", "association"), ("your SLURM account or QOS may not submit there: set "
                                             "hydra.launcher.additional_parameters.account=NAME (or qos)")),
    ]
    fix = next((h for keys, h in hints if any(k in low for k in keys)),
               "change the hydra.launcher.* setting it names (trainkit train -m hydra/launcher=slurm --cfg hydra "
               "shows them)")
    return f"SLURM refused to queue the sweep's jobs, so none ran: sbatch said: {said.rstrip('.')}. Fix: {fix}."


def hydra_complaint(exc: BaseException) -> UsageError | None:
    """Hydra's or OmegaConf's complaint about the line (an option it cannot find, a malformed override), met while
    Hydra composed a job, as one paragraph; None if `exc` is not theirs."""
    try:
        from hydra.errors import HydraException
        from omegaconf.errors import OmegaConfBaseException
    except ImportError:  # pragma: no cover - Hydra is a dependency
        return None
    if not isinstance(exc, (HydraException, OmegaConfBaseException)) or type(exc).__name__ == "InstantiationException":
        return None
    said = " ".join(line.strip() for line in str(exc).split("Config search path")[0].splitlines() if line.strip())
    return UsageError(f"{said.rstrip('.')}. trainkit train --help lists the groups and options; --cfg job prints the "
                      f"composed config.")


def _errno_name(exc: OSError) -> str:
    import errno

    return errno.errorcode.get(exc.errno or 0, "")
