"""Run directories, checkpoints and data in object storage, against a real S3 server: moto's server mode, started
here on 127.0.0.1 in its own process group and stopped with it. The trainkit processes reach it as they would AWS,
through AWS_ENDPOINT_URL and the AWS credential variables, from working directories and caches of their own (no
local state is shared between a run and its resume). A TCP relay in front of the server stands for an endpoint that
goes down mid-run and comes back."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import TRAINKIT, run_cli

from trainkit.engine import checkpoint

pytest.importorskip("s3fs", reason="the S3 tests need trainkit's s3 extra: pip install -e '.[s3]'")
pytest.importorskip("moto.server", reason="the S3 tests need moto's S3 server: pip install 'moto[server]'")

BUCKET = "tk-runs"
# Shuffling, dropout and a mid-epoch checkpoint every 25 steps: a resume must land on the same weights.
RUN = ["data.n_train=4800", "data.batch_size=32", "model.dropout=0.2", "trainer.max_epochs=3", "trainer.progress=none",
       "trainer.checkpoint_every_n_steps=25", "trainer.num_threads=1", "trainer.deterministic=true"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """moto's S3 server on 127.0.0.1 with the bucket made; yields the environment that reaches it."""
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "server.log"
    with log.open("w") as out:
        server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                  stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
    try:
        fs = _client(env)
        deadline = time.time() + 30
        while True:
            try:
                fs.mkdir(BUCKET)
                break
            except Exception:
                if time.time() > deadline or server.poll() is not None:
                    raise AssertionError("moto's S3 server did not start:\n" + log.read_text()) from None
                time.sleep(0.2)
        yield env
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def _client(env: dict[str, str]):
    import s3fs

    return s3fs.S3FileSystem(key=env["AWS_ACCESS_KEY_ID"], secret=env["AWS_SECRET_ACCESS_KEY"],
                             endpoint_url=env["AWS_ENDPOINT_URL"], skip_instance_cache=True)


def fresh(tmp_path: Path, name: str, env: dict[str, str]) -> tuple[Path, dict[str, str]]:
    """A working directory and a cache of its own: what another machine would have."""
    cwd = tmp_path / name
    cwd.mkdir()
    return cwd, {**env, "XDG_CACHE_HOME": str(cwd / ".cache")}


def weights(fs, key: str, tmp_path: Path) -> dict[str, torch.Tensor]:
    local = tmp_path / key.replace("/", "_")
    fs.get_file(key, str(local))
    return checkpoint.load(local)["modules"]["net"]


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def reference(s3, tmp_path_factory) -> str:
    """An uninterrupted run, written to the bucket."""
    tmp = tmp_path_factory.mktemp("reference")
    cwd, env = fresh(tmp, "a", s3)
    run_cli("train", *RUN, f"hydra.run.dir=s3://{BUCKET}/reference", cwd=cwd, env=env)
    return f"{BUCKET}/reference"


def test_a_run_writes_its_directory_to_the_bucket_and_is_read_back_from_anywhere(s3, reference, tmp_path):
    fs = _client(s3)
    stored = {p.removeprefix(reference + "/") for p in fs.find(reference)}
    for name in (".hydra/config.yaml", "metrics.csv", "summary.json", "checkpoints/last.ckpt", "checkpoints/best.ckpt",
                 "train.log"):
        assert name in stored, sorted(stored)
    assert any(p.startswith("tensorboard/events.out.tfevents") for p in stored), sorted(stored)
    assert not any(p.endswith((".tmp", ".part")) or p in (".lock", ".remote") for p in stored), sorted(stored)
    assert fs.cat(f"{reference}/metrics.csv").decode().count("\n") == 4, "a header and three epochs"

    cwd, env = fresh(tmp_path, "elsewhere", s3)
    listed = run_cli("runs", f"s3://{BUCKET}", cwd=cwd, env=env).stdout
    assert f"s3://{BUCKET}" in listed and "reference" in listed and "finished" in listed, listed
    evaluated = run_cli("eval", f"ckpt=s3://{BUCKET}/reference/checkpoints/best.ckpt", "trainer.progress=none",
                        cwd=cwd, env=env).stdout
    assert "test/loss" in evaluated, evaluated
    code = ("import trainkit, sys; m = trainkit.load(sys.argv[1]); print(type(m).__name__); "
            "print(trainkit.runs(sys.argv[2])['path'].tolist())")
    shown = subprocess.run([sys.executable, "-c", code, f"s3://{reference}", f"s3://{BUCKET}"], cwd=cwd,
                           capture_output=True, text=True, env={**os.environ, **env}, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert "Model" in shown.stdout and f"s3://{reference}" in shown.stdout, shown.stdout
    assert not (cwd / "outputs").exists() or not list((cwd / "outputs").glob("*/*/.hydra")), "no local training run"


def _started(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([*TRAINKIT, "train", *args], cwd=cwd, env={**os.environ, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for_stored(fs, pattern: str, proc: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.time() + timeout
    while not fs.glob(pattern):
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            raise AssertionError(f"{pattern} never reached the bucket:\n{proc.communicate()[0]}")
        time.sleep(0.05)
        fs.invalidate_cache()


def _resumed(url: str, tmp_path: Path, env: dict[str, str], started: float, run: list[str] = RUN) -> tuple[str, float]:
    """`trainkit train ... resume=URL` from a fresh folder and cache; what it said and the seconds from `started`
    until it said that it resumes (its first step follows at once)."""
    cwd, env = fresh(tmp_path, "resume", env)
    proc = _started([*run, f"resume={url}"], cwd, env)
    said, resumed_at = [], None
    for line in proc.stdout:
        said.append(line)
        if resumed_at is None and line.startswith("resuming "):
            resumed_at = time.time() - started
    proc.wait(timeout=120)
    out = "".join(said)
    assert proc.returncode == 0, out
    assert resumed_at is not None, out
    return out, resumed_at


def test_kill_9_mid_epoch_then_resume_from_the_bucket_elsewhere_is_exact(s3, reference, tmp_path):
    fs = _client(s3)
    cwd, env = fresh(tmp_path, "first", s3)
    proc = _started([*RUN, f"hydra.run.dir=s3://{BUCKET}/killed"], cwd, env)
    _wait_for_stored(fs, f"{BUCKET}/killed/checkpoints/epoch002-*.ckpt", proc)
    proc.send_signal(signal.SIGSTOP)  # mid-epoch 2, however fast this machine is
    proc.kill()
    proc.wait()
    killed = time.time()
    out, seconds = _resumed(f"s3://{BUCKET}/killed", tmp_path, s3, killed)
    print(f"kill -9 → resumed from the bucket in a fresh folder: {seconds:.1f} s")
    assert f"resuming s3://{BUCKET}/killed at epoch 2" in out, out
    assert same_weights(weights(fs, f"{reference}/checkpoints/last.ckpt", tmp_path),
                        weights(fs, f"{BUCKET}/killed/checkpoints/last.ckpt", tmp_path)), "final weights differ"
    rows = fs.cat(f"{BUCKET}/killed/metrics.csv").decode().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3"], rows


class Relay:
    """A TCP relay from a port of its own to the S3 server: what the clients see as the endpoint. `stop()` closes it
    and every connection through it (the endpoint is gone: connections are refused); `start()` opens it again."""

    def __init__(self, target: int) -> None:
        self.port, self.target = free_port(), target
        self.sockets: list[socket.socket] = []

    def start(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        self.sockets = [self.listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target))
            self.sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def stop(self) -> None:
        for s in self.sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


def test_a_store_that_stops_answering_stops_the_run_and_the_bucket_resumes(s3, reference, tmp_path):
    fs = _client(s3)
    relay = Relay(int(s3["AWS_ENDPOINT_URL"].rsplit(":", 1)[1]))
    relay.start()
    through = {**s3, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{relay.port}"}
    cwd, env = fresh(tmp_path, "first", through)
    long = [*RUN, "data.n_train=48000"]  # 1,500 steps an epoch: the run is still training when the store is gone
    proc = _started([*long, f"hydra.run.dir=s3://{BUCKET}/outage"], cwd, env)
    try:
        _wait_for_stored(fs, f"{BUCKET}/outage/checkpoints/epoch001-*.ckpt", proc)
        relay.stop()
        stopped = time.time()
        out = proc.communicate(timeout=90)[0]
        print(f"store down → run stopped in {time.time() - stopped:.1f} s")
    finally:
        proc.kill()
    assert proc.returncode == 1, out
    assert "Traceback" not in out, out
    error = out[out.index("error:"):]
    print(error)
    assert f"s3://{BUCKET}/outage" in error and "does not answer" in error, error
    assert f"resume=s3://{BUCKET}/outage" in error, error
    relay.start()
    resumed, _ = _resumed(f"s3://{BUCKET}/outage", tmp_path, through, time.time(), long)
    assert f"resuming s3://{BUCKET}/outage at epoch" in resumed, resumed
    summary = json.loads(fs.cat(f"{BUCKET}/outage/summary.json"))
    assert summary["status"] == "finished" and summary["epochs"] == 3, summary
    relay.stop()


@pytest.fixture
def unauthenticated(tmp_path):
    """A second moto server that checks credentials (moto's IAM: no key is known to it)."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "0"}, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert time.time() < deadline, "moto did not start"
            time.sleep(0.2)
    yield f"http://127.0.0.1:{port}"
    os.killpg(server.pid, signal.SIGKILL)
    server.wait()


@pytest.mark.parametrize("case", ["no credentials", "wrong credentials", "no server", "no bucket"])
def test_storage_mistakes_are_one_paragraph_within_seconds_and_leave_nothing(case, s3, tmp_path, request):
    env = dict(s3)
    url = f"s3://{BUCKET}/mistake"
    if case == "no credentials":
        env = {**env, "AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
               "AWS_CONFIG_FILE": "/nonexistent"}
        said = "no credentials were found"
    elif case == "wrong credentials":
        env["AWS_ENDPOINT_URL"] = request.getfixturevalue("unauthenticated")
        said = "the credentials were refused"
    elif case == "no server":
        env["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{free_port()}"
        said = "does not answer"
    else:
        url = "s3://no-such-bucket-here/run"
        said = "the bucket no-such-bucket-here does not exist"
    cwd, env = fresh(tmp_path, "cwd", env)
    if case == "no credentials":
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            env.pop(key)
    started = time.time()
    full = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    proc = subprocess.run([*TRAINKIT, "train", *RUN, f"hydra.run.dir={url}"], cwd=cwd, capture_output=True,
                          text=True, env={**full, **env}, timeout=120)
    took = time.time() - started
    assert proc.returncode != 0 and took < 45, (took, proc.stderr)
    assert proc.stderr.startswith("error:") and said in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert not (cwd / "outputs").exists() and not list((cwd / ".cache").rglob("*.ckpt")), "nothing is left behind"
    evaluated = subprocess.run([*TRAINKIT, "eval", f"ckpt={url}/checkpoints/best.ckpt"], cwd=cwd, capture_output=True,
                               text=True, env={**full, **env}, timeout=120)
    assert evaluated.returncode != 0 and evaluated.stderr.startswith("error:"), evaluated.stderr
    assert "Traceback" not in evaluated.stderr, evaluated.stderr


def test_data_and_sweeps_in_the_bucket(s3, mnist_files, tmp_path):
    fs = _client(s3)
    fs.put_file(str(mnist_files["kaggle_train"]), f"{BUCKET}/data/train.csv")
    fs.put_file(str(mnist_files["kaggle_test"]), f"{BUCKET}/data/test.csv")
    cwd, env = fresh(tmp_path, "cwd", s3)
    data = ["data=mnist_csv", f"data.train_csv=s3://{BUCKET}/data/train.csv",
            f"data.test_csv=s3://{BUCKET}/data/test.csv", "model=mlp", "trainer.max_epochs=1", "trainer.progress=none"]
    out = run_cli("train", "-m", *data, "optimizer.lr=0.01,0.001", f"hydra.sweep.dir=s3://{BUCKET}/sweep",
                  cwd=cwd, env=env).stdout
    assert "optimizer.lr" in out, out
    stored = {p.removeprefix(f"{BUCKET}/sweep/") for p in fs.find(f"{BUCKET}/sweep")}
    assert "sweep_summary.csv" in stored and "multirun.yaml" in stored, sorted(stored)
    assert sum(p.endswith("checkpoints/last.ckpt") for p in stored) == 2, sorted(stored)
    (copy,) = (cwd / ".cache").rglob("train.csv")
    first = copy.stat().st_mtime_ns
    run_cli("train", *data, f"hydra.run.dir=s3://{BUCKET}/again", cwd=cwd, env=env)
    assert copy.stat().st_mtime_ns == first, "the data's local copy is reused while the object is unchanged"
    listed = run_cli("runs", f"s3://{BUCKET}/sweep", cwd=cwd, env=env).stdout
    assert listed.count("finished") == 2, listed

    # A job stopped after its last checkpoint: `trainkit sweep resume URL` from elsewhere finishes it in the bucket.
    (summary,) = fs.glob(f"{BUCKET}/sweep/1_*/summary.json")
    stopped = {**json.loads(fs.cat(summary)), "status": "interrupted"}
    fs.pipe(summary, json.dumps(stopped).encode())
    cwd, env = fresh(tmp_path, "elsewhere", s3)
    out = run_cli("sweep", "resume", f"s3://{BUCKET}/sweep", cwd=cwd, env=env).stdout
    assert "job 1: interrupted, resuming" in out and "job 0: finished, kept" in out, out
    fs.invalidate_cache()
    assert json.loads(fs.cat(summary))["status"] == "finished"
    assert not any("/.resume" in p for p in fs.find(f"{BUCKET}/sweep")), "the resume's scratch folders stay local"


def test_a_line_that_fails_before_any_result_leaves_nothing_in_the_bucket(s3, tmp_path):
    fs = _client(s3)
    cwd, env = fresh(tmp_path, "cwd", s3)
    proc = run_cli("train", *RUN, f"resume=s3://{BUCKET}/never-trained", cwd=cwd, env=env, check=False)
    assert proc.returncode == 1 and proc.stderr.startswith("error: resume=s3://"), proc.stderr
    assert f"s3://{BUCKET}/never-trained/checkpoints/last.ckpt does not exist" in proc.stderr, proc.stderr
    fs.invalidate_cache()
    assert fs.find(f"{BUCKET}/never-trained") == [], "its .hydra/ and log went again"
