"""Ray: `trainer.launcher=ray trainer.devices=N` runs the N data-parallel processes as the workers of a Ray Train
TorchTrainer on the Ray cluster that RAY_ADDRESS names (`ray start ...`; without it, Ray's own rule: a cluster started
on this machine, else a Ray of this machine alone). Ray Train places the workers, makes their process group (gloo on
CPUs, nccl on GPUs) and, when one of them is lost, ends the group and starts it again (FailureConfig(max_failures=
trainer.max_restarts)); the restarted workers continue the run, in its run directory, from its newest checkpoint.

Each worker runs the same `trainkit train` line as a process of torchrun, in its own Ray worker process. What a launch
keeps across the group's restarts (how often each rank started, the run directory, an error that a restart would only
repeat) is in Ray's key-value store under the launch's id. `hydra/launcher=ray` (hydra_plugins/trainkit_ray.py) runs
a sweep's jobs as Ray tasks; `run_lines` runs the jobs that `trainkit sweep resume` finishes the same way.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import signal
import sys
import threading
import uuid
from typing import Any

from trainkit.clusters import ClusterEnvironment
from trainkit.errors import EXIT_CODES, ConfigError, UserError
from trainkit.registry import register_cluster

LAUNCH_ENV = "TRAINKIT_RAY_LAUNCH"  # in a worker of trainer.launcher=ray: the launch's id, its key in Ray's store
RESTARTS_ENV = "TRAINKIT_RAY_MAX_RESTARTS"
# Ray's internal key-value store (ray.experimental.internal_kv, which Ray's own libraries use): every worker of the
# cluster reaches it without a process of its own, where a named actor would cost one per launch.
NAMESPACE = "trainkit"
KILLED = 128 + 9  # what a shell says of a process killed by SIGKILL: `_launch` then says that no restarts are left


_given: list[str] = []  # the address this process connected to, where one was given


class RayError(UserError):
    """The Ray cluster cannot be reached, or cannot hold what the line asks of it."""


@register_cluster("ray")
class RayCluster(ClusterEnvironment):
    name = "ray"
    priority = 30  # a Ray worker on a node that SLURM or torchrun started is Ray's: Ray Train started it
    restarter = "Ray Train"
    worker = True

    @staticmethod
    def detect() -> bool:
        return LAUNCH_ENV in os.environ

    def join(self) -> None:
        """Ray Train made the process group before the worker ran this line (so distributed.setup, which would make
        one, is not called): only its ranks are exported, from Ray Train's own context, for trainkit's env:// view."""
        if not self.detect():
            raise ConfigError("trainer.cluster=ray names the environment of the workers that trainer.launcher=ray "
                              "starts, and this process is not one of them: use trainer.launcher=ray "
                              "trainer.devices=N (trainer.cluster=auto finds the environment by itself).")
        import ray.train

        context = ray.train.get_context()
        os.environ.update(RANK=str(context.get_world_rank()), WORLD_SIZE=str(context.get_world_size()),
                          LOCAL_RANK=str(context.get_local_rank()))
        _attempt()  # counted once per worker process, before anything asks whether this one is a restart

    def rank(self) -> int:
        import ray.train

        return ray.train.get_context().get_world_rank()

    def world_size(self) -> int:
        import ray.train

        return ray.train.get_context().get_world_size()

    def remember(self, key: str, value: str) -> None:
        from ray.experimental import internal_kv

        internal_kv._internal_kv_put(_key(key), value.encode(), overwrite=True, namespace=NAMESPACE)

    def recall(self, key: str) -> str | None:
        from ray.experimental import internal_kv

        value = internal_kv._internal_kv_get(_key(key), namespace=NAMESPACE)
        return None if value is None else value.decode()

    def restarts_left(self) -> int | None:
        return int(os.environ.get(RESTARTS_ENV, "0")) - (_attempt() - 1)

    def restarted(self) -> str | None:
        if _attempt() == 1:
            return None
        left = self.restarts_left()
        return f"Ray Train restarted its workers after one of them failed ({left} restart{'' if left == 1 else 's'} " \
               f"left)"


def _key(key: str) -> bytes:
    return f"{os.environ.get(LAUNCH_ENV, 'none')}/{key}".encode()


@functools.cache  # once per worker process: Ray Train starts new processes for each attempt of its group
def _attempt() -> int:
    """Which attempt of the launch's worker group this process belongs to (1: the first). Each rank counts its own
    starts, and every rank starts once per attempt, so the count names the attempt alike on every rank."""
    from ray.experimental import internal_kv

    rank = os.environ.get("RANK", "0")
    key = _key(f"starts/rank{rank}")
    count = int(internal_kv._internal_kv_get(key, namespace=NAMESPACE) or 0) + 1
    internal_kv._internal_kv_put(key, str(count).encode(), overwrite=True, namespace=NAMESPACE)
    return count


def require_ray(what: str) -> None:
    """`what` (trainer.launcher=ray, hydra/launcher=ray) needs Ray, which trainkit's optional `ray` extra installs."""
    from trainkit.extras import MissingExtra

    if importlib.util.find_spec("ray") is None or importlib.util.find_spec("ray.train") is None:
        raise MissingExtra(f"{what} needs Ray with Ray Train (ray[train]), which is not installed: it comes with "
                           f"trainkit's optional `ray` extra. Install it with pip install \"trainkit[ray]\" (in a "
                           f"source checkout: pip install -e \".[ray]\"), on this machine and on every node of the "
                           f"cluster, or drop {what} to run on this machine.")


def connect(what: str, address: str | None = None) -> Any:
    """The `ray` module, connected to the cluster at `address`, else RAY_ADDRESS's, else Ray's default (a cluster
    started on this machine with `ray start`, or a Ray of this machine alone)."""
    require_ray(what)
    import ray

    if ray.is_initialized():
        return ray
    address = address or os.environ.get("RAY_ADDRESS") or None
    if not sys.stdout.isatty():  # Ray colours the prefix of its workers' lines even in a log file
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")
    _given[:] = [address] if address else []
    # ray.init makes SIGTERM exit at once; trainkit's own handler (a stop that says where the run goes on) stays.
    sigterm = signal.getsignal(signal.SIGTERM) if threading.current_thread() is threading.main_thread() else None
    try:
        _reachable(address)  # ray.init waits without end for an address where no Ray listens
        ray.init(address=address, logging_level="ERROR", configure_logging=True)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError, OSError) as exc:
        said = " ".join(str(exc).split())[:300]
        where = f"the Ray cluster at {address}" if address else "a Ray cluster"
        raise RayError(f"{what}: could not connect to {where} ({type(exc).__name__}: {said}). Start one with `ray "
                       f"start --head` and point RAY_ADDRESS at it (RAY_ADDRESS=HEAD_IP:6379), check that the address "
                       f"and port are right and reachable (`ray status --address=...`), or drop {what} to run on "
                       f"this machine.") from None
    finally:
        if sigterm is not None:
            signal.signal(signal.SIGTERM, sigterm)
    return ray


def _reachable(address: str | None, timeout_s: float = 10) -> None:
    """Raise ConnectionError unless something listens at `address` (HOST:PORT, as RAY_ADDRESS gives the head's)."""
    import socket

    if not address or address in ("auto", "local") or "://" in address:
        return  # Ray's own rules: a cluster found on this machine, a new one, Ray Client
    host, _, port = address.rpartition(":")
    if not port.isdigit():
        raise ValueError(f"{address!r} is not HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ConnectionError(f"nothing answers at {address} within {timeout_s:.0f} s: {exc.strerror or exc}") from None


def describe(ray: Any) -> str:
    """`the Ray cluster at 10.0.0.5:6379 (2 nodes, 16 CPUs, 2 GPUs)`, for the console."""
    total = ray.cluster_resources()
    nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    gpus = int(total.get("GPU", 0))
    address = ray.get_runtime_context().gcs_address
    chosen = "" if _given else ", which Ray chose: RAY_ADDRESS is not set"
    return (f"the Ray cluster at {address} ({nodes} node{'s' * (nodes != 1)}, {int(total.get('CPU', 0))} CPUs"
            f"{f', {gpus} GPUs' if gpus else ''}{chosen})")


def uses_gpu(device: str, ray: Any) -> bool:
    """trainer.device → whether each worker takes a GPU: auto takes one where the cluster has GPUs."""
    if device == "auto":
        return ray.cluster_resources().get("GPU", 0) > 0
    return device.startswith("cuda")


def _check_room(nprocs: int, use_gpu: bool, ray: Any) -> None:
    """Ray Train waits for free resources without end: a group that the cluster can never hold is refused now."""
    unit = "GPU" if use_gpu else "CPU"
    have = int(ray.cluster_resources().get(unit, 0))
    if nprocs > have:
        raise ConfigError(f"trainer.devices={nprocs} with trainer.launcher=ray needs {nprocs} {unit}s (one per "
                          f"worker), and {describe(ray)} has {have}: lower trainer.devices to {max(have, 1)}, or "
                          f"add nodes to the cluster (ray start --address=HEAD_IP:PORT on each).")


def launch(nprocs: int, args: list[str], max_restarts: int = 0, device: str = "auto", say: Any = print) -> int:
    """Run `trainkit train ARGS` in `nprocs` Ray Train workers and return their exit code (rank 0's; 137 where a worker
    was lost and no restarts were left). When one fails, Ray Train restarts them all up to `max_restarts` times; they
    continue the run. `say` gets one line on where they run."""
    ray = connect("trainer.launcher=ray")
    from ray.train import FailureConfig, RunConfig, ScalingConfig, TrainingFailedError
    from ray.train.torch import TorchTrainer

    use_gpu = uses_gpu(device, ray)
    _check_room(nprocs, use_gpu, ray)
    workers = "1 Ray Train worker" if nprocs == 1 else f"{nprocs} Ray Train workers"
    say(f"ray: {workers} ({'a GPU' if use_gpu else 'a CPU'} each) on {describe(ray)}")
    launch_id = uuid.uuid4().hex
    config = {"args": list(args), "cwd": os.getcwd(), "launch": launch_id, "max_restarts": max_restarts}
    name = f"trainkit-{launch_id[:12]}"
    trainer = TorchTrainer(_worker, train_loop_config=config,
                           scaling_config=ScalingConfig(num_workers=nprocs, use_gpu=use_gpu),
                           run_config=RunConfig(name=name, failure_config=FailureConfig(max_failures=max_restarts)))
    try:
        return _fit(trainer, TrainingFailedError, say)
    finally:
        _forget(ray, launch_id, name)


def _fit(trainer: Any, failed: type, say: Any) -> int:
    """Run the workers; their exit code. Ctrl-C or SIGTERM here ends them: they run in threads of Ray's processes,
    where no signal reaches trainkit's loop, so Ray ends them with this launch, and what they saved last is where
    the run goes on."""
    terms: list[int] = []

    def terminated(signum: int, frame: Any) -> None:
        terms.append(signum)
        raise KeyboardInterrupt  # the one exception that Ray's waits pass on (as a KeyboardInterrupt of their own)

    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, terminated) if main else None
    try:
        result = trainer.fit()
    except failed as exc:  # Ray Train's TrainingFailedError: no restarts left
        return _failed(exc)
    except KeyboardInterrupt:
        term = bool(terms)
        say(f"stopped by {'SIGTERM' if term else 'Ctrl-C'}: Ray Train ended its workers without a last save; the "
            f"run directory's newest checkpoint continues the run (the same command with resume=RUN_DIR).")
        return EXIT_CODES["sigterm" if term else "sigint"]
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return int(getattr(result, "return_value", None) or 0)  # rank 0's (Ray Train v2; v1 returns no value)


def _failed(exc: Exception) -> int:
    """The exit code of a group that failed for good: KILLED where a worker process was lost (rank 0 could not say
    so), else RayError with what Ray Train said (a worker's own error was said by the worker)."""
    from ray.exceptions import ActorDiedError, RayActorError

    failures = getattr(exc, "worker_failures", None) or {}
    if any(isinstance(f, (ActorDiedError, RayActorError)) for f in failures.values()):
        return KILLED
    first = next(iter(failures.values()), exc)  # none: Ray Train's controller itself failed
    raise RayError(f"the Ray Train workers failed and no restarts are left: {type(first).__name__}: "
                   f"{' '.join(str(first).split())[:300]}") from None


def _forget(ray: Any, launch_id: str, name: str) -> None:
    """What the launch left in Ray's store, and Ray Train's record of it (a folder of its state, where Ray Train
    keeps it by default: the run's own directory holds what matters)."""
    import shutil

    from ray.experimental import internal_kv

    if ray.is_initialized():
        internal_kv._internal_kv_del(f"{launch_id}/".encode(), del_by_prefix=True, namespace=NAMESPACE)
    shutil.rmtree(os.path.join(os.path.expanduser("~/ray_results"), name), ignore_errors=True)


class _Restart(RuntimeError):
    """Raised in a worker so that Ray Train counts a failure and starts the group again."""


def _worker(config: dict[str, Any]) -> int:
    """One Ray Train worker: `trainkit train ARGS`, as `python -m trainkit` runs it, in this process; its exit code.
    A code that asks for a restart (another worker is gone) is raised, for Ray Train to restart the group."""
    os.environ[LAUNCH_ENV] = config["launch"]
    os.environ[RESTARTS_ENV] = str(config["max_restarts"])
    if os.path.isdir(config["cwd"]):  # a shared file system: relative paths mean what they meant where typed
        os.chdir(config["cwd"])
    code = _run_trainkit(["train", *config["args"]])
    if code == EXIT_CODES["restart"]:
        raise _Restart(f"rank {os.environ.get('RANK')}: another worker of this run is gone; Ray Train restarts them "
                       f"all, and they continue from the newest checkpoint")
    return code


def _run_trainkit(args: list[str]) -> int:
    """`python -m trainkit ARGS` in this process (as its module, so that this layer imports no command)."""
    import runpy

    argv = sys.argv
    sys.argv = ["trainkit", *args]
    try:
        runpy.run_module("trainkit", run_name="__main__", alter_sys=False)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = argv
    return 0


def run_lines(lines: list[list[str]], num_cpus: float = 1, num_gpus: float = 0, address: str | None = None,
              say: Any = print) -> list[int]:
    """`trainkit train LINE` for each line, each as a Ray task on the cluster (side by side, as the cluster has
    room), in the working directory of this process; their exit codes, in order."""
    ray = connect("hydra/launcher=ray", address)
    say(f"ray: {jobs_as_tasks(len(lines))} on {describe(ray)}")
    task = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus, max_retries=0)(_line)
    refs = [task.remote(line, os.getcwd()) for line in lines]
    try:
        return [_code(ray, ref) for ref in refs]
    except BaseException:  # Ctrl-C or SIGTERM here: the jobs are stopped too (each saves: SIGINT reaches it)
        for ref in refs:
            ray.cancel(ref)
        raise


def jobs_as_tasks(n: int) -> str:
    return "1 job as a Ray task" if n == 1 else f"{n} jobs as Ray tasks"


def _code(ray: Any, ref: Any) -> int:
    try:
        return int(ray.get(ref))
    except ray.exceptions.RayError as exc:  # its worker process was lost: the job stopped where it was
        print(f"error: a job's Ray task was lost ({type(exc).__name__}); its last checkpoint stays.", file=sys.stderr)
        return KILLED


def _line(args: list[str], cwd: str) -> int:
    """One job of `trainkit sweep resume` in a Ray task: `python -m trainkit train ARGS` in its own process; a cancel
    (KeyboardInterrupt here) stops it as Ctrl-C does, after it saved."""
    import subprocess

    proc = subprocess.Popen([sys.executable, "-m", "trainkit", "train", *args], cwd=cwd if os.path.isdir(cwd) else None,
                            start_new_session=True)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGINT)
        return proc.wait()
