"""Machines for the scale-out tests, made on this one: network namespaces that stand for hosts, and a real
single-node SLURM cluster (munged, slurmctld, slurmd) in one of them.

What the tests start listens only on the loopback or on addresses of namespaces made here, and is stopped by its
PID. Where this machine cannot make them (not root, no iproute2, a kernel that refuses network namespaces, no
SLURM packages and no apt), the tests that need them skip, and the end of the run says why (SKIPPED).
"""

from __future__ import annotations

import datetime
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SLURM_PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge"]
SKIPPED: dict[str, str] = {}  # what could not be made here, and why: printed at the end of the run
NOTES: list[str] = []  # what the scale-out tests measured (the cluster's start, a requeue cycle): printed too


def skip(what: str, why: str) -> None:
    SKIPPED[what] = why
    pytest.skip(f"{what}: {why}")


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    for what, why in SKIPPED.items():
        terminalreporter.write_line(f"skipped {what}: {why}", yellow=True)
    for note in NOTES:
        terminalreporter.write_line(note)


# --- processes: started in a session of their own, stopped by PID ----------------------------------------------

def children(pid: int) -> list[int]:
    """The PIDs whose parent is `pid` (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def stop(proc: subprocess.Popen, timeout: float = 15, sig: int = signal.SIGTERM) -> None:
    """Stop a process this test started, and what it started in turn: `sig` first, SIGKILL after `timeout`."""
    if proc.poll() is not None:
        return
    tree = [proc.pid]
    for pid in tree:
        tree += children(pid)
    try:
        proc.send_signal(sig)
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        pass
    for pid in tree:  # SIGKILL for whatever is still there, the process first
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(5)


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen]]:
    """The processes a test starts: those still running when it ends, a failed one too, are stopped."""
    procs: list[subprocess.Popen] = []
    yield procs
    for proc in procs:
        stop(proc)


def wait_for(what: str, ready, timeout: float, proc: subprocess.Popen | None = None, every: float = 0.02):
    """Poll `ready()` until it returns something true; fail naming `what` after `timeout` (or once `proc` ended)."""
    deadline = time.monotonic() + timeout
    while True:
        value = ready()
        if value:
            return value
        ended = proc is not None and proc.poll() is not None
        if ended or time.monotonic() > deadline:
            out = ""
            if proc is not None and proc.stdout is not None:
                stop(proc)  # what it printed, to say why
                out = proc.communicate(timeout=10)[0]
            raise AssertionError(f"{'process ended' if ended else f'{timeout:.0f} s passed'} before {what}\n{out}")
        time.sleep(every)


# --- hosts: network namespaces ----------------------------------------------------------------------------------

def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


@dataclass
class Host:
    """One machine for a test: a network namespace with its loopback up (and, joined to another host, an address
    of its own), or, where none can be made, this machine itself (`netns` None)."""

    netns: str | None
    address: str = "127.0.0.1"
    hostname: str | None = None

    def command(self, argv: list[str]) -> list[str]:
        """`argv` run on this host: its network and, when it has one, its host name and /etc/hosts."""
        if self.netns is None:
            return list(argv)
        if self.hostname is None:
            # nsenter enters the network namespace only: slurmd needs the machine's /sys (cgroups), which
            # `ip netns exec` would replace by the namespace's own.
            return ["nsenter", f"--net=/run/netns/{self.netns}", *argv]
        # ip netns exec puts /etc/netns/NAME/hosts in place of /etc/hosts; unshare gives the host name.
        return ["ip", "netns", "exec", self.netns, "unshare", "--uts", "sh", "-c",
                f'hostname {self.hostname} && exec "$@"', "sh", *argv]

    def popen(self, argv: list[str], **kwargs) -> subprocess.Popen:
        return subprocess.Popen(self.command(argv), start_new_session=True, **kwargs)


def _namespace_problem() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None or shutil.which("nsenter") is None:
        return "iproute2 (ip) and util-linux (nsenter) are needed"
    return None


def _make_namespace(name: str, stack: ExitStack) -> None:
    try:
        _ip("netns", "add", name)
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(f"the kernel refused a network namespace: {exc.stderr.strip()}") from None
    stack.callback(lambda: subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30))
    _ip("-n", name, "link", "set", "lo", "up")


@contextmanager
def isolated_host(tag: str, fallback: bool = True) -> Iterator[Host]:
    """A host that no other reaches: its loopback, and an address on a link to nowhere. What a test serves there
    (torch's TCPStore listens on every address) stays there. `fallback`: this machine itself where no network
    namespace can be made, as the tests of one machine ran before."""
    problem = _namespace_problem()
    if problem and fallback:
        yield Host(None)
        return
    if problem:
        skip("isolated host", problem)
    name = f"tk{os.getpid()}{tag}"
    with ExitStack() as stack:
        try:
            _make_namespace(name, stack)
            # An address besides the loopback: getaddrinfo(AI_ADDRCONFIG), which SLURM uses, finds no IPv4
            # address at all without one. Both ends of the pair stay in the namespace.
            _ip("-n", name, "link", "add", f"{name[-6:]}a", "type", "veth", "peer", "name", f"{name[-6:]}b")
            _ip("-n", name, "addr", "add", "10.213.255.1/24", "dev", f"{name[-6:]}a")
            _ip("-n", name, "link", "set", f"{name[-6:]}a", "up")
            _ip("-n", name, "link", "set", f"{name[-6:]}b", "up")
        except (RuntimeError, subprocess.CalledProcessError) as exc:
            if not fallback:
                skip("isolated host", getattr(exc, "stderr", None) or str(exc))
            stack.close()
            yield Host(None)
            return
        yield Host(name)


@contextmanager
def two_hosts() -> Iterator[tuple[Host, Host]]:
    """Two hosts joined by a veth pair (10.213.0.1 and 10.213.0.2), each with its own host name that both
    resolve: what torchrun needs of two machines. Skips where this machine cannot make them."""
    problem = _namespace_problem()
    if problem:
        skip("two hosts", problem)
    tag = f"tk{os.getpid()}"
    names = {f"{tag}a": ("10.213.0.1", "tk-host-a"), f"{tag}b": ("10.213.0.2", "tk-host-b")}
    hosts_file = "127.0.0.1 localhost\n" + "".join(f"{a} {h}\n" for a, h in names.values())
    etc = Path("/etc/netns")
    with ExitStack() as stack:
        try:
            made_etc = not etc.exists()
            etc.mkdir(exist_ok=True)
            if made_etc:
                stack.callback(lambda: etc.rmdir() if etc.is_dir() and not any(etc.iterdir()) else None)
            for name in names:
                _make_namespace(name, stack)
                (etc / name).mkdir()
                stack.callback(shutil.rmtree, etc / name, ignore_errors=True)
                (etc / name / "hosts").write_text(hosts_file)
            (a, b) = names
            _ip("link", "add", f"{tag}va", "type", "veth", "peer", "name", f"{tag}vb")
            stack.callback(lambda: subprocess.run(["ip", "link", "del", f"{tag}va"], capture_output=True, timeout=30))
            for name, end in ((a, "va"), (b, "vb")):
                _ip("link", "set", f"{tag}{end}", "netns", name)
                _ip("-n", name, "addr", "add", f"{names[name][0]}/24", "dev", f"{tag}{end}")
                _ip("-n", name, "link", "set", f"{tag}{end}", "up")
        except (RuntimeError, subprocess.CalledProcessError, OSError) as exc:
            skip("two hosts", getattr(exc, "stderr", None) or str(exc))
        yield tuple(Host(name, address, hostname) for name, (address, hostname) in names.items())  # type: ignore[misc]


# --- a SLURM cluster ---------------------------------------------------------------------------------------------

@dataclass
class SlurmCluster:
    """A single-node SLURM cluster, reachable from its host's network only: run its clients with `command`."""

    root: Path  # slurm.conf, state, spool, logs, munge's socket
    host: Host
    env: dict[str, str]  # SLURM_CONF for the clients (sbatch, scancel, submitit's calls)
    daemons: list[subprocess.Popen] = field(default_factory=list)

    def command(self, argv: list[str]) -> list[str]:
        return self.host.command(argv)

    def run(self, *argv: str, timeout: float = 30) -> str:
        done = subprocess.run(self.command(list(argv)), env=self.env, capture_output=True, text=True,
                              timeout=timeout)
        if done.returncode:
            raise AssertionError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr}")
        return done.stdout

    def jobs(self) -> list[str]:
        """The IDs of the jobs in the queue (pending or running)."""
        return self.run("squeue", "-h", "-o", "%i").split()

    def next_time_limit_check(self, after: float) -> float:
        """When slurmctld next checks time limits (every 30 s) at or after `after` (a time.time()): SLURM sends a
        job's time-limit warning (sbatch --signal) at the first check from 30 s before it is due."""
        log = (self.root / "slurmctld.log").read_text().splitlines()
        checks = [line for line in log if "Testing job time limits" in line]
        # None yet: slurmctld counts its first 30 s from its start, its log's first line.
        line = checks[-1] if checks else log[0]
        last = datetime.datetime.fromisoformat(line[1:].split("]", 1)[0]).timestamp()
        while last < after:
            last += 30.0
        return last


def _slurm_problem() -> str | None:
    if os.geteuid() != 0:
        return "SLURM's daemons need root (they run as root, on a network namespace of their own)"
    if all(shutil.which(b) for b in ("slurmctld", "slurmd", "sbatch", "munged", "mungekey")):
        return None
    if shutil.which("apt-get") is None:
        return f"the packages {' '.join(SLURM_PACKAGES)} are missing and there is no apt-get to install them"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *SLURM_PACKAGES]
    try:
        if subprocess.run(install, env=env, capture_output=True, timeout=300).returncode:
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, timeout=300)
            done = subprocess.run(install, env=env, capture_output=True, text=True, timeout=300)
            if done.returncode:
                return f"apt-get install {' '.join(SLURM_PACKAGES)} failed: {done.stderr.strip()[-300:]}"
    except subprocess.TimeoutExpired:
        return "apt-get took more than 5 minutes"
    return None


SLURM_CONF = """\
ClusterName=trainkit
SlurmctldHost={hostname}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=cred_expire=5,socket={root}/munge/munge.socket.2
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
KillWait=5
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=1
SlurmctldDebug=debug2
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=1000 State=UNKNOWN
PartitionName=debug Default=YES Nodes=ALL MaxTime=INFINITE State=UP
"""
# cred_expire=5 and the scheduler's short intervals: SLURM holds a requeued job for cred_expire + 1 s (default
# 120 s) and schedules every 2 s. SlurmctldDebug=debug2 logs each time-limit check (next_time_limit_check).
# NodeName=localhost: a job's first node is what torch's processes of a multi-task job connect to.


def _start_munge(root: Path) -> subprocess.Popen:
    munge = root / "munge"
    munge.mkdir(mode=0o755)  # munged wants its socket's directory open to all, and its own
    shutil.chown(munge, "munge", "munge")
    key = munge / "munge.key"
    subprocess.run(["mungekey", "--create", f"--keyfile={key}"], user="munge", group="munge", extra_groups=[],
                   check=True, capture_output=True, timeout=30)
    proc = subprocess.Popen(
        ["munged", "--foreground", f"--socket={munge}/munge.socket.2", f"--key-file={key}",
         f"--pid-file={munge}/munged.pid", f"--log-file={munge}/munged.log", f"--seed-file={munge}/munged.seed"],
        user="munge", group="munge", extra_groups=[], start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for("munged's socket", lambda: (munge / "munge.socket.2").exists(), 15, proc)
    return proc


@contextmanager
def slurm_cluster_on(host: Host) -> Iterator[SlurmCluster]:
    root = Path(tempfile.mkdtemp(prefix="trainkit-slurm-"))
    root.chmod(0o755)  # munged runs as munge and must reach its directory
    env = {**os.environ, "SLURM_CONF": str(root / "slurm.conf")}
    cluster = SlurmCluster(root, host, env)
    try:
        (root / "slurm.conf").write_text(SLURM_CONF.format(hostname=socket.gethostname(), root=root,
                                                           cpus=os.cpu_count() or 1))
        cluster.daemons.append(_start_munge(root))
        for argv in (["slurmctld", "-D"], ["slurmd", "-D", "-N", "localhost"]):
            cluster.daemons.append(host.popen([*argv, "-f", str(root / "slurm.conf")], env=env,
                                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

        def idle() -> bool:
            done = subprocess.run(host.command(["sinfo", "-h", "-o", "%T"]), env=env, capture_output=True,
                                  text=True, timeout=10)
            return done.stdout.strip() == "idle"

        wait_for("the SLURM node is idle", idle, 30, every=0.2)
        yield cluster
    finally:
        if len(cluster.daemons) == 3:  # no job outlives the cluster: cancel them, then wait for them to end
            subprocess.run(host.command(["scancel", "--partition=debug"]), env=env, capture_output=True,
                           timeout=30)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and cluster.jobs():
                time.sleep(0.2)
        for proc in reversed(cluster.daemons):  # slurmd, slurmctld, munged
            stop(proc, timeout=10)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    """A real SLURM cluster for the session, on a host of its own (nothing of it listens on this machine's
    addresses). Installs the Debian packages when missing; skips with the reason where it cannot start."""
    started = time.monotonic()
    problem = _slurm_problem() or _namespace_problem()
    if problem:
        skip("SLURM cluster", problem)
    installed = time.monotonic()
    with isolated_host("s", fallback=False) as host, slurm_cluster_on(host) as cluster:
        NOTES.append(f"SLURM cluster: packages there after {installed - started:.1f} s, idle after "
                     f"{time.monotonic() - installed:.1f} s more")
        yield cluster
