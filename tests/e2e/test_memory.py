"""Memory does not grow with the data. One story, three tests: a decode of an image folder is SIGKILLed (its worker
processes must die with it); `trainkit train data=image_folder` then runs under a memory cap (cgroup v1) that leaves
less room than the decoded store takes, continues the interrupted decode and trains to its end; the store it made
holds what a fresh decode gives, and the chunks written before the kill were not decoded again.

Root and the cgroup v1 memory controller are needed (benchmarks/memory.py measures the same at full size).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from conftest import TRAINKIT

from trainkit.data.images import CHUNK

CGROUPS = Path("/sys/fs/cgroup/memory")
SIDE, IMAGES, CLASSES = 224, 1700, 10  # RGB 224×224: a 244 MiB store, decoded in about 3 s on 2 cores
STORE_BYTES = IMAGES * 3 * SIDE * SIDE
# The capped run's own need, whatever the data's size: its peak anonymous memory (trainkit, torch, the model and its
# batches while training; the two decoding workers before) was 557-617 MiB with this command on 1,200-2,000 of these
# pictures, capped or not. The cap leaves HEADROOM_MIB above that: less room than the store takes, so a store held in
# the process's memory would not fit.
BASELINE_MIB, HEADROOM_MIB = 600, 150
MARKER = 7  # a pixel value written over a finished chunk before the decode continues


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "capping memory needs root (a cgroup v1 memory group)"
    if not (CGROUPS / "memory.limit_in_bytes").is_file():
        return f"no cgroup v1 memory controller at {CGROUPS}"
    return None


pytestmark = pytest.mark.skipif(_why_not() is not None, reason=_why_not() or "")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """IMAGES distinct smooth colour pictures (random 7×7 upscaled), as JPEG in CLASSES class folders."""
    from PIL import Image

    root = tmp_path_factory.mktemp("memory") / "pictures"
    rng = np.random.default_rng(0)
    for i in range(IMAGES):
        folder = root / f"class{i % CLASSES}"
        folder.mkdir(parents=True, exist_ok=True)
        small = Image.fromarray(rng.integers(0, 256, (7, 7, 3), dtype=np.uint8))
        small.resize((SIDE, SIDE), Image.Resampling.BILINEAR).save(folder / f"{i:05d}.jpg", quality=85)
    return root


@contextlib.contextmanager
def capped(limit_bytes: int):
    """A fresh memory cgroup with this cap; whatever is left in it at the end is killed, then it is removed."""
    group = CGROUPS / f"trainkit-test-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    group.mkdir()
    try:
        (group / "memory.limit_in_bytes").write_text(str(limit_bytes))
        yield group
    finally:
        for _ in range(100):
            pids = [int(p) for p in (group / "cgroup.procs").read_text().split()]
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if not pids:
                break
            time.sleep(0.05)
        group.rmdir()


def anonymous_bytes(group: Path) -> int:
    """The anonymous memory charged to a v1 memory cgroup (memory.stat's rss): what a cap kills for."""
    for line in (group / "memory.stat").read_text().splitlines():
        if line.startswith("rss "):
            return int(line.split()[1])
    return 0


def _children(pid: int) -> dict[int, str]:
    """{pid: start time} of the live children of `pid` (the start time tells a reused pid apart)."""
    found = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                fields = Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid and fields[0] != "Z":
                    found[int(entry.name)] = fields[19]
    return found


def _alive(pid: int, started: str) -> bool:
    """Still running: not gone, not a zombie waiting for a reaper, and not another process given the same pid."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return False
    return fields[0] != "Z" and fields[19] == started


@pytest.fixture(scope="module")
def interrupted(folder, tmp_path_factory) -> dict:
    """A decode of `folder` into a fresh store, in a process SIGKILLed once its first chunks are written: its cache
    dir, its worker processes as they were at the kill, and those still running 2 s later."""
    cache = tmp_path_factory.mktemp("interrupted") / "xdg"
    code = f"from trainkit.data import image_folder; image_folder.load({str(folder)!r})"
    proc = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "XDG_CACHE_HOME": str(cache)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    workers: dict[int, str] = {}
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if list(cache.glob("trainkit/image_folder/*/.tkcache/.*.partial/progress.json")):
                workers = _children(proc.pid)
                if workers:
                    break
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"the decode ended by itself before it could be killed:\n{err}"
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline and any(_alive(p, s) for p, s in workers.items()):
        time.sleep(0.05)
    survivors = [p for p, s in workers.items() if _alive(p, s)]
    for pid in survivors:  # not left running whatever the test says
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return {"cache": cache, "workers": workers, "survivors": survivors}


@pytest.fixture(scope="module")
def capped_run(folder, interrupted) -> dict:
    """`trainkit train` on the folder under the cap, continuing the interrupted decode. Before it runs, the first chunk
    the killed decode had finished is overwritten with a marker value: a run that decodes it again erases the marker."""
    cache = interrupted["cache"]
    (partial,) = cache.glob("trainkit/image_folder/*/.tkcache/.*.partial")
    done = sorted(json.loads((partial / "progress.json").read_text())["done"])
    assert 0 < len(done) < -(-IMAGES // CHUNK), f"the killed decode had finished chunks {done}"
    rows = slice(done[0] * CHUNK, (done[0] + 1) * CHUNK)
    x = np.load(partial / "x.npy", mmap_mode="r+")
    decoded = np.array(x[rows])
    x[rows] = MARKER
    x.flush()
    del x
    cap = (BASELINE_MIB + HEADROOM_MIB) << 20
    command = [*TRAINKIT, "train", "data=image_folder", f"data.root={folder}", "model=mlp", "model.hidden=[16]",
               "trainer.max_epochs=1", "trainer.limit_train_batches=10", "trainer.limit_eval_batches=2",
               "trainer.device=cpu", "trainer.progress=none", "trainer.tensorboard=false",
               f"hydra.run.dir={cache.parent / 'run'}"]
    env = {**os.environ, "XDG_CACHE_HOME": str(cache), "COLUMNS": "200"}
    with capped(cap) as group:
        peak, over = [0], threading.Event()

        def watch() -> None:
            while not over.is_set():
                peak[0] = max(peak[0], anonymous_bytes(group))
                over.wait(0.02)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        # The shell joins the group, then becomes trainkit: it and its decoding workers are capped.
        proc = subprocess.run(["sh", "-c", f'echo $$ > {group}/cgroup.procs && exec "$@"', "sh", *command],
                              check=False, env=env, cwd=cache.parent, capture_output=True, text=True, timeout=300)
        over.set()
        watcher.join()
        at_cap = int((group / "memory.failcnt").read_text())
    return {"proc": proc, "cap": cap, "peak": peak[0], "at_cap": at_cap, "run_dir": cache.parent / "run",
            "rows": rows, "decoded": decoded}


def test_decoding_workers_die_with_their_parent(interrupted):
    assert interrupted["workers"], "no worker process was seen decoding"
    assert interrupted["survivors"] == [], (f"{len(interrupted['survivors'])} of {len(interrupted['workers'])} "
                                            f"decoding workers still ran 2 s after their parent was killed")


def test_image_folder_trains_under_a_cap_that_leaves_less_room_than_its_store(capped_run):
    proc, cap, peak = capped_run["proc"], capped_run["cap"], capped_run["peak"]
    killed = " (137: killed over the cap)" if proc.returncode == 137 else ""
    assert proc.returncode == 0, f"exit {proc.returncode}{killed}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert (capped_run["run_dir"] / "checkpoints" / "last.ckpt").is_file()
    # The room the run left under the cap was smaller than the store: the store was never in its own memory.
    room = cap - peak
    assert STORE_BYTES > room, (f"the run needed only {peak >> 20} MiB, leaving {room >> 20} MiB under the cap: "
                                f"more than the {STORE_BYTES >> 20} MiB store; lower BASELINE_MIB")
    print(f"cap {cap >> 20} MiB, store {STORE_BYTES >> 20} MiB, peak anonymous {peak >> 20} MiB, "
          f"{capped_run['at_cap']} times at the cap (page cache reclaimed)")


def test_an_interrupted_decode_continues_into_the_arrays_of_a_fresh_one(folder, interrupted, capped_run):
    import skimage.io  # noqa: F401 (imported once here, not in each forked decoding worker)

    from trainkit.data.images import read_images

    assert capped_run["proc"].returncode == 0
    cache = interrupted["cache"]
    assert not list(cache.glob("trainkit/image_folder/*/.tkcache/.*.partial")), "the store was left unfinished"
    (x_file,) = cache.glob("trainkit/image_folder/*/.tkcache/*.decoded-*.x.npy")
    stored = np.load(x_file, mmap_mode="r")
    rows = capped_run["rows"]
    assert (stored[rows] == MARKER).all(), "a chunk finished before the kill was decoded again"
    files = sorted(folder.glob("*/*.jpg"))  # ImageFolder's order: class folders sorted, then file names
    fresh = read_images(files, (3, SIDE, SIDE)).numpy()
    assert np.array_equal(capped_run["decoded"], fresh[rows]), "a chunk finished before the kill holds other pixels"
    fresh[rows] = MARKER
    assert np.array_equal(stored, fresh)
    labels = np.load(x_file.with_name(x_file.name.replace(".x.npy", ".y.npy")))
    assert labels.tolist() == [int(f.parent.name.removeprefix("class")) for f in files]
