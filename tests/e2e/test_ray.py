"""Ray, on a real cluster of two nodes started here: `trainer.launcher=ray` runs the data-parallel workers through Ray
Train (metrics equal to one process at the same global batch; a worker killed with SIGKILL is restarted by Ray and the
run resumes to bitwise-equal weights), and `hydra/launcher=ray` runs a sweep's jobs as Ray tasks (a job whose worker is
killed is a row that did not finish, which `trainkit sweep resume` finishes on Ray from its checkpoint).

The cluster (`ray start --head` and `ray start --address=...`, each with one CPU) runs in a network namespace of its
own where this machine can make one (tests/cluster.py), with the trainkit lines that use it: Ray advertises the
machine's own address for its nodes, and there only the namespace's addresses exist. It starts once for the module and
is stopped by the PIDs of what the test started, and what those started in turn."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from cluster import NOTES, Host, children, isolated_host, skip, stop
from conftest import TRAINKIT, run_dirs

from trainkit.engine import checkpoint

RAY = str(Path(sys.executable).with_name("ray"))
# One thread per process, shuffling and a scheduler that must continue exactly, a checkpoint every 10 steps (the kill
# comes after one); a progress line per step, which times the first step after the restart.
RUN = ["trainer.progress=plain", "trainer.plain_every_s=0", "trainer.log_every_n_steps=1", "trainer.tensorboard=false",
       "trainer.num_threads=1", "trainer.deterministic=true", "data.n_train=4096", "trainer.max_epochs=3",
       "trainer.checkpoint_every_n_steps=10", "model.dropout=0.0", "scheduler=step", "scheduler.step_size=1",
       "scheduler.gamma=0.9"]
ON_RAY = ["trainer.launcher=ray", "trainer.devices=2", "data.batch_size=32"]
STEP = re.compile(r"epoch \d+/\d+ batch \d+/\d+")


@dataclass
class RayNodes:
    host: Host
    address: str
    # Token authentication, as a cluster should have: a token file that an earlier Ray left in ~/.ray would otherwise
    # be sent to a head that expects none, which refuses it.
    token: str = field(default_factory=lambda: secrets.token_hex(32))
    nodes: list[subprocess.Popen] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "RAY_ADDRESS": self.address, "HYDRA_FULL_ERROR": "0", "RAY_AUTH_MODE": "token",
                "RAY_AUTH_TOKEN": self.token}

    def popen(self, argv: list[str], cwd: Path) -> subprocess.Popen:
        return self.host.popen(argv, cwd=cwd, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)

    def run(self, *args: str, cwd: Path, timeout: float = 150) -> str:
        """`trainkit ARGS` on the cluster's host; its output, after it succeeded."""
        proc = self.popen([*TRAINKIT, *args], cwd)
        try:
            out = proc.communicate(timeout=timeout)[0]
        finally:
            stop(proc)
        assert proc.returncode == 0, out
        return out

    def descendants(self) -> list[int]:
        tree = [p.pid for p in self.nodes]
        for pid in tree:
            tree += children(pid)
        return tree


def _start_node(cluster: RayNodes, argv: list[str], deadline: float) -> subprocess.Popen:
    """`ray start ... --block`, which stays in the foreground with its node's processes as its children; returns once
    it says the node is up."""
    proc = cluster.host.popen([RAY, "start", *argv, "--num-cpus=1", "--block", "--disable-usage-stats"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env={k: v for k, v in cluster.env.items() if k != "RAY_ADDRESS"})
    said: list[str] = []
    while proc.poll() is None and time.monotonic() < deadline:
        line = proc.stdout.readline()
        said.append(line)
        if "Ray runtime started" in line:
            threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep its pipe from filling up
            return proc
    stop(proc, timeout=5)
    raise AssertionError(f"ray start {' '.join(argv)} did not start its node:\n{''.join(said)}")


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    if importlib.util.find_spec("ray") is None or not Path(RAY).is_file():
        skip("Ray cluster", 'Ray is not installed: pip install -e ".[ray]"')
    with isolated_host("r") as host:
        port = 6379 if host.netns else _free_port()
        address = f"127.0.0.1:{port}"
        cluster = RayNodes(host, address)
        started = time.monotonic()
        deadline = started + 60
        try:
            head = tmp_path_factory.mktemp("rayhead")
            cluster.nodes.append(_start_node(cluster, ["--head", f"--port={port}", "--node-ip-address=127.0.0.1",
                                                   "--include-dashboard=false", f"--temp-dir={head}"], deadline))
            cluster.nodes.append(_start_node(cluster, [f"--address={address}", "--node-ip-address=127.0.0.1"],
                                             deadline))
            nodes = _node_addresses(cluster)
            assert nodes == ["127.0.0.1", "127.0.0.1"], f"Ray's nodes must be on the loopback here: {nodes}"
            NOTES.append(f"ray: a cluster of 2 nodes up in {time.monotonic() - started:.1f} s"
                         f"{'' if host.netns else ' (on this machine: no network namespace could be made)'}")
            yield cluster
        finally:
            for node in reversed(cluster.nodes):
                stop(node, timeout=5)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node_addresses(cluster: RayNodes) -> list[str]:
    """The addresses that Ray's nodes advertise (the work goes there)."""
    code = ("import ray; ray.init(logging_level='ERROR'); "
            "import json; print(json.dumps(sorted(n['NodeManagerAddress'] for n in ray.nodes() if n['Alive'])))")
    proc = subprocess.run(cluster.host.command([sys.executable, "-c", code]), env=cluster.env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def ray_run(ray_cluster, tmp_path_factory) -> tuple[Path, str]:
    """The data-parallel run on Ray, never interrupted: its run directory and output."""
    cwd = tmp_path_factory.mktemp("ray_run")
    out = ray_cluster.run("train", *ON_RAY, *RUN, cwd=cwd)
    (run_dir,) = run_dirs(cwd)
    return run_dir, out


def test_two_ray_workers_match_one_process_with_twice_the_batch(ray_cluster, ray_run, tmp_path):
    run_dir, out = ray_run
    assert "global batch 2 × 32 = 64" in out, out
    assert f"ray: 2 Ray Train workers (a CPU each) on the Ray cluster at {ray_cluster.address} (2 nodes, 2 CPUs)" \
           in out, out
    one = subprocess.run([*TRAINKIT, "train", *RUN, "data.batch_size=64"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert one.returncode == 0, one.stdout + one.stderr
    (one_dir,) = run_dirs(tmp_path)
    a, b = (json.loads((d / "summary.json").read_text()) for d in (run_dir, one_dir))
    assert a["status"] == "finished"
    for key in ("train/loss", "val/loss", "val/mae"):
        assert a["final"][key] == pytest.approx(b["final"][key], rel=1e-4, abs=1e-6), key
    assert a["test"]["test/loss"] == pytest.approx(b["test"]["test/loss"], rel=1e-4)
    wa, wb = (checkpoint.load(d / "checkpoints" / "last.ckpt")["modules"]["net"] for d in (run_dir, one_dir))
    assert all(torch.allclose(wa[k], wb[k], atol=1e-5) for k in wa)


def test_a_line_the_cluster_cannot_run_is_refused_at_once_and_leaves_nothing(ray_cluster, tmp_path):
    """More workers than the cluster has CPUs would wait for resources without end; an address where nothing
    listens would make ray.init wait as long. Each is one paragraph, and no run directory stays."""
    proc = ray_cluster.popen([*TRAINKIT, "train", "trainer.launcher=ray", "trainer.devices=3"], tmp_path)
    out = proc.communicate(timeout=60)[0]
    assert proc.returncode == 1, out  # a ConfigError
    assert "error: trainer.devices=3 with trainer.launcher=ray needs 3 CPUs (one per worker), and the Ray cluster " \
           f"at {ray_cluster.address} (2 nodes, 2 CPUs) has 2: lower trainer.devices to 2" in out, out
    closed = subprocess.run([*TRAINKIT, "train", "trainer.launcher=ray", "trainer.devices=2"], cwd=tmp_path, text=True,
                            capture_output=True, timeout=60, env={**os.environ, "RAY_ADDRESS": "127.0.0.1:9"})
    assert closed.returncode != 0
    assert "error: trainer.launcher=ray: could not connect to the Ray cluster at 127.0.0.1:9 (ConnectionError: " \
           "nothing answers at 127.0.0.1:9 within 10 s" in closed.stderr, closed.stderr
    assert not (tmp_path / "outputs").exists() or not list((tmp_path / "outputs").rglob("*")), "nothing left behind"


def timeless(row: dict) -> dict:
    return {k: v for k, v in row.items() if not k.startswith(("time/", "train/samples_per_s"))}


@pytest.mark.timeout(240)
def test_a_killed_ray_worker_is_restarted_and_the_run_resumes_exactly(ray_cluster, ray_run, tmp_path):
    proc = ray_cluster.popen([*TRAINKIT, "train", *ON_RAY, *RUN], tmp_path)
    lines: list[tuple[float, str]] = []
    reader = threading.Thread(target=lambda: lines.extend((time.monotonic(), line) for line in proc.stdout))
    reader.start()
    try:
        deadline = time.monotonic() + 150
        while not list(tmp_path.glob("outputs/*/*/checkpoints/epoch001-step*.ckpt")):  # rank 0 is 10 steps in
            assert time.monotonic() < deadline and proc.poll() is None, "".join(line for _, line in lines)
            time.sleep(0.005)
        workers = [pid for pid in ray_cluster.descendants() if _cmdline(pid).startswith("ray::RayTrainWorker")]
        assert len(workers) == 2, workers
        killed = time.monotonic()
        os.kill(max(workers), signal.SIGKILL)
        proc.wait(timeout=180)
    finally:
        stop(proc)
        reader.join(timeout=10)
    out = "".join(line for _, line in lines)
    assert proc.returncode == 0, out
    assert "Ray Train restarted its workers after one of them failed (1 restart left): continuing" in out, out
    restarted = next(i for i, (_, line) in enumerate(lines) if "Ray Train restarted its workers" in line)
    resumed = next(t for t, line in lines[restarted:] if STEP.search(line))
    seconds = resumed - killed
    print(f"ray: a worker killed with SIGKILL → the first step of the restarted workers: {seconds:.1f} s")
    NOTES.append(f"ray: a worker killed with SIGKILL → the first step of the restarted workers: {seconds:.1f} s")
    (run_dir,) = run_dirs(tmp_path)
    reference = checkpoint.load(ray_run[0] / "checkpoints" / "last.ckpt")
    final = checkpoint.load(run_dir / "checkpoints" / "last.ckpt")
    net, ref = final["modules"]["net"], reference["modules"]["net"]
    assert all(torch.equal(net[k], ref[k]) for k in ref), "final weights differ from the uninterrupted run's"
    assert [timeless(r) for r in final["fit"]["history"]] == [timeless(r) for r in reference["fit"]["history"]]
    epochs = [row["epoch"] for row in csv.DictReader((run_dir / "metrics.csv").open())]
    assert epochs == ["1", "2", "3"], "each epoch once in metrics.csv"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""


def test_a_sweep_runs_as_ray_tasks_loses_a_job_to_a_kill_and_resumes_on_ray(ray_cluster, tmp_path):
    sweep_dir = tmp_path / "sweep"
    proc = ray_cluster.popen([*TRAINKIT, "train", "-m", "hydra/launcher=ray", "data.batch_size=32,64",
                              "data.n_train=20000", "trainer.max_epochs=2", "trainer.checkpoint_every_n_steps=20",
                              "trainer.progress=none", "trainer.tensorboard=false", "trainer.num_threads=1",
                              f"hydra.sweep.dir={sweep_dir}"], tmp_path)
    try:
        deadline = time.monotonic() + 90
        while not list(sweep_dir.glob("0_*/checkpoints/epoch001-step*.ckpt")):  # job 0 is 20 steps in
            assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()[0]
            time.sleep(0.005)
        (job0,) = [pid for pid in ray_cluster.descendants() if _cmdline(pid).startswith("ray::_execute_job")
                   and any("/0_" in target for target in _open_files(pid))]  # its log file is open in its directory
        os.kill(job0, signal.SIGKILL)
        out = proc.communicate(timeout=90)[0]
    finally:
        stop(proc)
    assert proc.returncode == 1, out  # a job did not finish
    assert f"ray: 2 jobs as Ray tasks on the Ray cluster at {ray_cluster.address}" in out, out
    assert "error: job 0's Ray task was lost (WorkerCrashedError: " in out, out
    rows = {r["job"]: r["status"] for r in csv.DictReader((sweep_dir / "sweep_summary.csv").open())}
    assert rows == {"0": "crashed", "1": "finished"}, rows
    out = ray_cluster.run("sweep", "resume", str(sweep_dir), cwd=tmp_path)
    assert "job 0: crashed, resuming" in out and "job 1: finished, kept" in out, out
    assert f"ray: 1 job as a Ray task on the Ray cluster at {ray_cluster.address}" in out, out
    assert re.search(r"resuming \S+ at epoch 1, batch [1-9]", out), "job 0 continued from its checkpoint: " + out
    rows = {r["job"]: r["status"] for r in csv.DictReader((sweep_dir / "sweep_summary.csv").open())}
    assert rows == {"0": "finished", "1": "finished"}, rows


def _open_files(pid: int) -> list[str]:
    found = []
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return []
    for fd in fds:
        try:
            found.append(os.readlink(fd))
        except OSError:  # closed meanwhile
            pass
    return found


@pytest.mark.parametrize("line", [["trainer.launcher=ray", "trainer.devices=2"],
                                  ["-m", "hydra/launcher=ray", "seed=1,2"]], ids=["train", "sweep"])
def test_without_ray_the_error_names_the_extra(line, tmp_path):
    """A Python where `import ray` finds nothing (sys.modules["ray"] = None, set before trainkit starts)."""
    (tmp_path / "hide").mkdir()
    (tmp_path / "hide" / "sitecustomize.py").write_text("import sys\nsys.modules['ray'] = None\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "hide"), "RAY_ADDRESS": "127.0.0.1:1"}
    proc = subprocess.run([*TRAINKIT, "train", *line, "trainer.max_epochs=1", "trainer.progress=none"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode != 0
    assert "needs Ray with Ray Train (ray[train]), which is not installed" in proc.stderr, proc.stderr
    assert 'pip install "trainkit[ray]"' in proc.stderr and 'pip install -e ".[ray]"' in proc.stderr, proc.stderr
    assert proc.stderr.count("error:") == 1, proc.stderr
    assert not (tmp_path / "outputs").exists() or not any((tmp_path / "outputs").rglob("*.ckpt"))
