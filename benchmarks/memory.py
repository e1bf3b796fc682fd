"""Whether training memory grows with the data: `trainkit train data=image_folder` on folders of 10,000 and 100,000
images, the peak anonymous memory of its whole process tree, a run under a memory cap smaller than its sample store,
and the decode rate of trainkit's image path.

    .venv/bin/python benchmarks/memory.py                       # everything, about 20 minutes on 2 cores (root)
    .venv/bin/python benchmarks/memory.py --only cgroup         # one section (scale, phases, cgroup, rates)
    .venv/bin/python benchmarks/memory.py --quick               # tiny folders: checks the harness, not the figures

Sections:
  scale   for each N in --sizes (10,000 and 100,000 32×32 PNGs): `trainkit train data=image_folder model=mlp` once with
          a fresh store (the decode) and once reading it, the process tree's peak anonymous memory sampled every 20 ms
  phases  the same folders through image_folder.load's steps (wrapped one by one: listing, probe, decode, carve,
          stats), the data check and a loader epoch, in one process: anonymous memory after each step and its peak
          during it; once more with tracemalloc, for the source lines that hold Python memory
  cgroup  a folder whose decoded store is --store-ratio times a memory cap; the cap is the peak anonymous memory of a
          smaller run of the same image size plus --margin-mib; the run must train to its end (exit 0) under it
  rates   images/s of trainkit's decode path (image_folder.load into a fresh store) for 32×32 and 224×224 JPEGs

Anonymous memory is what a memory cap kills a process for: the page cache (the store's pages, memory-mapped) is
reclaimed under pressure. Three measures of it, each over the process and its descendants (the decoding workers):
  sum RssAnon   /proc/PID/status's RssAnon summed: a forked worker's pages that it still shares with its parent count
                once per process, so with 2 workers during the decode this counts the parent's memory up to 3 times
  sum Pss_Anon  /proc/PID/smaps_rollup's Pss_Anon summed: shared pages split between the processes that share them,
                which adds up to the anonymous memory that really exists
  cgroup rss    the memory cgroup's own count of anonymous pages charged to it (memory.stat's rss): what the cap acts on

Pictures are CIFAR-10's 50,000 training images (../shared/data/cifar10), written as PNG or JPEG into 10 class folders,
the second 50,000 mirrored left to right; 224×224 ones are the same pictures upscaled (bilinear). Folders and stores go
under --workdir (default /tmp/tk-memory), never into the repository; a folder already written is reused.
Results: benchmarks/results/memory.json and a markdown table (printed, and benchmarks/results/memory.md).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import multiprocessing
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
PY = sys.executable
TRAINKIT = str(Path(PY).with_name("trainkit"))
CGROUP_ROOT = Path("/sys/fs/cgroup/memory")
SECTIONS = ("scale", "phases", "cgroup", "rates")
MIB = 1 << 20
TICK_S = 0.02  # the sampling period
CIFAR = ROOT.parent / "shared" / "data" / "cifar10"


def say(text: str) -> None:
    print(text, flush=True)


# ------------------------------------------------------------------------------------------------ the pictures
def cifar_images(root: Path) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10's 50,000 training pictures as uint8 N×32×32×3 and their labels, read by trainkit's checked reader."""
    from trainkit.data.cifar10 import _read_batch

    folder = root / "cifar-10-batches-py"
    parts = [_read_batch(folder / f"data_batch_{k}") for k in range(1, 6)]
    x = np.concatenate([data for data, _ in parts]).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(x), np.concatenate([labels for _, labels in parts]).astype(np.int64)


_PICTURES: tuple[np.ndarray, np.ndarray] | None = None  # the writer processes' copy (forked: shared, not copied)


def _write_some(job: tuple[Path, list[int], int, str]) -> None:
    from PIL import Image

    root, indices, size, suffix = job
    x, y = _PICTURES
    for i in indices:
        picture = x[i % len(x)]
        if (i // len(x)) % 2:  # the second pass over the pictures: mirrored, so no two files are copies
            picture = picture[:, ::-1]
        image = Image.fromarray(np.ascontiguousarray(picture))
        if size != picture.shape[0]:
            image = image.resize((size, size), Image.Resampling.BILINEAR)
        path = root / f"class{y[i % len(x)]}" / f"{i:06d}{suffix}"
        image.save(path, quality=90) if suffix == ".jpg" else image.save(path)


def image_folder(workdir: Path, n: int, size: int, suffix: str) -> Path:
    """A folder of `n` CIFAR-10 pictures of size×size in ImageFolder layout (10 class folders), written once."""
    global _PICTURES
    root = workdir / "folders" / f"cifar-{n}-{size}{suffix.replace('.', '-')}"
    done = root / ".written"  # hidden: image_folder leaves dot files out
    if done.is_file():
        return root
    shutil.rmtree(root, ignore_errors=True)
    for c in range(10):
        (root / f"class{c}").mkdir(parents=True)
    _PICTURES = _PICTURES or cifar_images(CIFAR)
    started = time.perf_counter()
    jobs = [(root, list(range(s, min(n, s + 1000))), size, suffix) for s in range(0, n, 1000)]
    with multiprocessing.get_context("fork").Pool(os.cpu_count() or 1) as pool:
        pool.map(_write_some, jobs)
    done.write_text(f"{n} {size} {suffix}\n")
    say(f"  wrote {n:,} {size}×{size} {suffix} pictures into {root} in {time.perf_counter() - started:.0f} s")
    return root


# -------------------------------------------------------------------------------------- sampling a process tree
def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, session id) of a process, or None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), int(fields[3])


def session(sid: int) -> list[int]:
    """Every live process of the session `sid` (the run's own, started with start_new_session): its descendants,
    and any that outlived their parent and were re-parented (they keep their session)."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None and stat[1] == sid:
                found.append(int(entry.name))
    return found


def _kib(file: str, field: str) -> int:
    try:
        with open(file) as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def cgroup_rss(group: Path) -> int:
    """Anonymous bytes charged to a v1 memory cgroup (memory.stat's rss)."""
    with contextlib.suppress(OSError, ValueError):
        for line in (group / "memory.stat").read_text().splitlines():
            if line.startswith("rss "):
                return int(line.split()[1])
    return 0


class Sampler(threading.Thread):
    """Every TICK_S: the session's summed RssAnon and Pss_Anon, its process count, the cgroup's rss, and when the
    store's decode started (its `.partial` folder appeared) and ended (its key file appeared)."""

    def __init__(self, sid: int, cache: Path | None, group: Path | None) -> None:
        super().__init__(daemon=True)
        self.sid, self.cache, self.group = sid, cache, group
        self.start_s = time.perf_counter()
        self.peak = {"rss_anon": 0, "pss_anon": 0, "cgroup_rss": 0, "processes": 0}
        self.at_peak_s = 0.0
        self.decode: dict[str, float] = {}
        self.series: list[tuple[float, int, int]] = []  # (s, sum RssAnon KiB, sum Pss_Anon KiB), one a second
        self.pids: set[int] = set()
        self.stopping = threading.Event()

    def run(self) -> None:
        last_kept = -1.0
        while not self.stopping.is_set():
            now = time.perf_counter() - self.start_s
            pids = session(self.sid)
            self.pids.update(pids)
            rss = sum(_kib(f"/proc/{p}/status", "RssAnon:") for p in pids)
            pss = sum(_kib(f"/proc/{p}/smaps_rollup", "Pss_Anon:") for p in pids)
            if pss > self.peak["pss_anon"]:
                self.at_peak_s = now
            self.peak["rss_anon"] = max(self.peak["rss_anon"], rss)
            self.peak["pss_anon"] = max(self.peak["pss_anon"], pss)
            self.peak["processes"] = max(self.peak["processes"], len(pids))
            if self.group is not None:
                self.peak["cgroup_rss"] = max(self.peak["cgroup_rss"], cgroup_rss(self.group) // 1024)
            if now - last_kept >= 1.0:
                self.series.append((round(now, 2), rss, pss))
                last_kept = now
            self._watch_store(now)
            self.stopping.wait(TICK_S)

    def _watch_store(self, now: float) -> None:
        if self.cache is None or "end" in self.decode:
            return
        for folder in self.cache.glob("trainkit/image_folder/*/.tkcache"):
            with contextlib.suppress(OSError):
                names = os.listdir(folder)
                if "start" not in self.decode and any(".decoded-" in n and n.endswith(".partial") for n in names):
                    self.decode["start"] = now
                done = any(".decoded-" in n and n.endswith(".json") and not n.startswith(".") for n in names)
                if done and "start" in self.decode:  # a store that was there from the start was not decoded
                    self.decode["end"] = now


def run_sampled(cmd: list[str], log: Path, cache: Path | None = None, group: Path | None = None,
                timeout: float = 3600) -> dict[str, Any]:
    """`cmd` in a session of its own (in the cgroup `group` when given), sampled until it exits; then any process of
    its session still alive is counted and killed."""
    env = {**os.environ, "COLUMNS": "200"}
    if cache is not None:
        env["XDG_CACHE_HOME"] = str(cache)
    argv = cmd if group is None else ["sh", "-c", f'echo $$ > {group}/cgroup.procs && exec "$@"', "sh", *cmd]
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                cwd=log.parent)
        sampler = Sampler(proc.pid, cache, group)
        sampler.start()
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            rc = proc.wait()
        wall = time.perf_counter() - started
        time.sleep(0.5)  # workers that do die with their parent have gone by now
        sampler.stopping.set()
        sampler.join()
    leftovers = session(proc.pid)
    for pid in leftovers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    decode = sampler.decode
    return {"command": " ".join(cmd), "exit_code": rc, "wall_s": round(wall, 2),
            "peak_rss_anon_mib": round(sampler.peak["rss_anon"] / 1024, 1),
            "peak_pss_anon_mib": round(sampler.peak["pss_anon"] / 1024, 1),
            "peak_at_s": round(sampler.at_peak_s, 2),
            **({"peak_cgroup_rss_mib": round(sampler.peak["cgroup_rss"] / 1024, 1)} if group else {}),
            "max_processes": sampler.peak["processes"], "leftover_processes": len(leftovers),
            "decode_s": round(decode["end"] - decode["start"], 2) if "end" in decode else None,
            "decode_window_s": [decode.get("start"), decode.get("end")],
            "series_s_rssanon_kib_pssanon_kib": sampler.series,
            "log_tail": log.read_text()[-1500:] if rc else ""}


def train_command(root: Path, run_dir: Path, extra: list[str]) -> list[str]:
    return [TRAINKIT, "train", "data=image_folder", f"data.root={root}", "model=mlp", "trainer.max_epochs=1",
            "trainer.device=cpu", "trainer.progress=none", f"hydra.run.dir={run_dir}", *extra]


def fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


# ----------------------------------------------------------------------------------------------------- sections
def scale(args: argparse.Namespace) -> dict[str, Any]:
    """For each N: a run that decodes into a fresh store, then one that reads it."""
    out: dict[str, Any] = {"image_size": 32, "format": "PNG", "overrides": args.overrides, "runs": {}}
    for n in args.sizes:
        root = image_folder(args.workdir, n, 32, ".png")
        cache = fresh(args.workdir / "xdg" / f"scale-{n}")
        for phase in ("decode", "read"):
            run_dir = args.workdir / "runs" / f"scale-{n}-{phase}"
            shutil.rmtree(run_dir, ignore_errors=True)
            log = args.workdir / "logs" / f"scale-{n}-{phase}.log"
            r = run_sampled(train_command(root, run_dir, args.overrides), log, cache)
            r["images"], r["store_mib"] = n, round(n * 3 * 32 * 32 / MIB, 1)
            if phase == "decode" and r["decode_s"]:
                r["decode_images_per_s"] = round(n / r["decode_s"])
            out["runs"][f"{n}-{phase}"] = r
            say(f"scale {n:,} {phase}: exit {r['exit_code']}, peak anon: sum RssAnon {r['peak_rss_anon_mib']:.0f} MiB, "
                f"sum Pss_Anon {r['peak_pss_anon_mib']:.0f} MiB (at {r['peak_at_s']:.0f} s of {r['wall_s']:.0f} s), "
                f"decode {r['decode_s']} s")
        shutil.rmtree(cache, ignore_errors=True)  # the store: as large as the folder's pixels
    runs = out["runs"]
    for phase in ("decode", "read"):
        a, b = runs[f"{min(args.sizes)}-{phase}"], runs[f"{max(args.sizes)}-{phase}"]
        out[f"growth_{phase}_mib"] = {"rss_anon": round(b["peak_rss_anon_mib"] - a["peak_rss_anon_mib"], 1),
                                      "pss_anon": round(b["peak_pss_anon_mib"] - a["peak_pss_anon_mib"], 1),
                                      "store": round(b["store_mib"] - a["store_mib"], 1)}
    return out


def make_cgroup(cap: int) -> Path:
    group = CGROUP_ROOT / f"tk-memory-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    group.mkdir()
    (group / "memory.limit_in_bytes").write_text(str(cap))
    return group


def remove_cgroup(group: Path) -> None:
    """Kill whatever is left in the group, then remove it."""
    for _ in range(50):
        with contextlib.suppress(OSError):
            pids = [int(p) for p in (group / "cgroup.procs").read_text().split()]
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if not pids:
                group.rmdir()
                return
        time.sleep(0.1)
    say(f"  could not remove {group}")


def cgroup(args: argparse.Namespace) -> dict[str, Any]:
    """A small run of the chosen image size gives the peak; the cap is that plus a margin; a folder whose store is
    store_ratio × the cap trains under it."""
    size, extra = args.cgroup_size, [f"model.hidden=[{args.cgroup_hidden}]", *args.overrides]
    small_root = image_folder(args.workdir, args.cgroup_small, size, ".jpg")
    small_cache = fresh(args.workdir / "xdg" / "cgroup-small")
    unlimited = make_cgroup(1 << 50)  # the same measures as the capped run, cgroup rss included
    try:
        small = run_sampled(train_command(small_root, fresh(args.workdir / "runs" / "cgroup-small"), extra),
                            args.workdir / "logs" / "cgroup-small.log", small_cache, unlimited)
        small["max_usage_mib"] = round(int((unlimited / "memory.max_usage_in_bytes").read_text()) / MIB, 1)
        small["images"] = args.cgroup_small
    finally:
        remove_cgroup(unlimited)
        shutil.rmtree(small_cache, ignore_errors=True)
    if small["exit_code"]:
        raise SystemExit(f"the small run failed:\n{small['log_tail']}")
    # The cap starts from the peak that counts each anonymous page once (Pss_Anon): the RssAnon sum counts the
    # parent's pages again in each forked worker, which no cap ever sees.
    base = max(small["peak_pss_anon_mib"], small["peak_cgroup_rss_mib"])
    cap_mib = math.ceil(base + args.margin_mib)
    row = 3 * size * size
    n = math.ceil(args.store_ratio * cap_mib * MIB / row)
    say(f"cgroup: small run ({args.cgroup_small:,} images) peak anon {base:.0f} MiB → cap {cap_mib} MiB; "
        f"{n:,} images of {size}×{size} make a {n * row / MIB:,.0f} MiB store")
    root = image_folder(args.workdir, n, size, ".jpg")
    cache = fresh(args.workdir / "xdg" / "cgroup-big")
    run_dir = fresh(args.workdir / "runs" / "cgroup-big")
    group = make_cgroup(cap_mib * MIB)
    try:
        big = run_sampled(train_command(root, run_dir, extra), args.workdir / "logs" / "cgroup-big.log", cache, group)
        big["max_usage_mib"] = round(int((group / "memory.max_usage_in_bytes").read_text()) / MIB, 1)
        big["failcnt"] = int((group / "memory.failcnt").read_text())
    finally:
        remove_cgroup(group)
        shutil.rmtree(cache, ignore_errors=True)
    big["checkpoint_written"] = (run_dir / "checkpoints" / "last.ckpt").is_file()
    big["images"], big["store_mib"] = n, round(n * row / MIB, 1)
    say(f"cgroup: exit {big['exit_code']}, peak anon: sum RssAnon {big['peak_rss_anon_mib']:.0f} MiB, sum Pss_Anon "
        f"{big['peak_pss_anon_mib']:.0f} MiB, cgroup rss {big['peak_cgroup_rss_mib']:.0f} MiB; max_usage_in_bytes "
        f"{big['max_usage_mib']:.0f} MiB (page cache included); leftover processes {big['leftover_processes']}")
    return {"image_size": size, "format": "JPEG (CIFAR-10 upscaled, bilinear)", "model_hidden": args.cgroup_hidden,
            "margin_mib": args.margin_mib, "cap_mib": cap_mib, "small": small, "big": big}


def rates(args: argparse.Namespace) -> dict[str, Any]:
    """image_folder.load of a folder into a fresh store, in a fresh process (as `trainkit train` would make it), timed
    in that process: the decode alone (images.decode_into into the store's file) and the whole load."""
    out: dict[str, Any] = {"workers": os.cpu_count(), "cases": []}
    for size, n in ((32, args.rate_images_32), (224, args.rate_images_224)):
        root = image_folder(args.workdir, n, size, ".jpg")
        cache = fresh(args.workdir / "xdg" / f"rates-{size}")
        code = RATE_PROBE.format(root=str(root))
        proc = subprocess.run([PY, "-c", code], env={**os.environ, "XDG_CACHE_HOME": str(cache)},
                              capture_output=True, text=True, check=False)
        shutil.rmtree(cache, ignore_errors=True)
        if proc.returncode:
            raise SystemExit(f"the rate probe failed:\n{proc.stderr[-2000:]}")
        case = {"image_size": size, "images": n, **json.loads(proc.stdout.strip().splitlines()[-1])}
        case["decode_images_per_s"] = round(n / case["decode_s"])
        case["load_images_per_s"] = round(n / case["load_s"])
        out["cases"].append(case)
        say(f"rates {size}×{size} JPEG, {n:,} images: decode {case['decode_images_per_s']:,}/s, whole fresh load "
            f"{case['load_images_per_s']:,}/s")
    return out


# The decode is timed from the outside of images.decode_into, which trainkit's load calls (wrapped, not replaced).
RATE_PROBE = """
import json, time
from trainkit.data import image_folder, images
spent = []
real = image_folder.decode_into
def timed(*a, **k):
    t = time.perf_counter(); real(*a, **k); spent.append(time.perf_counter() - t)
image_folder.decode_into = timed
t = time.perf_counter()
image_folder.load({root!r})
print(json.dumps({{"load_s": time.perf_counter() - t, "decode_s": sum(spent)}}))
"""


def phases(args: argparse.Namespace) -> dict[str, Any]:
    """The data path of `trainkit train data=image_folder`, phase by phase, in one fresh process per N and store state
    (fresh: decoded; stored: read): the process tree's anonymous memory (sum Pss_Anon) after each phase and its peak
    during it. Then, reading the store once more with tracemalloc on, the source lines holding the most Python
    memory once the data is loaded."""
    out: dict[str, Any] = {"image_size": 32, "format": "PNG", "runs": {}}
    for n in args.sizes:
        root = image_folder(args.workdir, n, 32, ".png")
        cache = fresh(args.workdir / "xdg" / f"phases-{n}")
        for state in ("fresh", "stored", "traced"):
            proc = subprocess.run([PY, __file__, "--probe", state, str(root)], capture_output=True, text=True,
                                  env={**os.environ, "XDG_CACHE_HOME": str(cache)}, check=False)
            if proc.returncode:
                raise SystemExit(f"the phase probe failed:\n{proc.stderr[-3000:]}")
            out["runs"][f"{n}-{state}"] = r = json.loads(proc.stdout.strip().splitlines()[-1])
            say(f"phases {n:,} {state}: " + ", ".join(f"{k} {v['after_mib']:.0f} (peak {v['peak_mib']:.0f})"
                                                      for k, v in r["phases"].items()))
        shutil.rmtree(cache, ignore_errors=True)
    return out


def probe_phases(state: str, root: str) -> dict[str, Any]:
    """(run in a fresh process) image_folder.load with its steps wrapped (listing, probe, decode, stats, carve), then
    the data check `trainkit train` makes, then a BatchLoader epoch over each split; the tree's sum Pss_Anon (MiB)
    after each step and the peak during it."""
    import ctypes
    import gc
    import tracemalloc

    import torch

    from trainkit.data import image_folder as reader
    from trainkit.data.check import training_problems
    from trainkit.data.loader import BatchLoader

    if state == "traced":
        tracemalloc.start(8)
    me = os.getpid()
    peak = [0]
    stop = threading.Event()

    def anon() -> int:  # KiB: this process and its workers (forked: their shared pages split between them)
        pids = [me, *descendants(me)]
        return sum(_kib(f"/proc/{p}/smaps_rollup", "Pss_Anon:") for p in pids)

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], anon())
            stop.wait(TICK_S)

    threading.Thread(target=sample, daemon=True).start()
    result: dict[str, Any] = {"phases": {}}

    def mark(name: str, started: float) -> None:
        gc.collect()
        now = anon()
        result["phases"][name] = {"after_mib": round(now / 1024, 1), "peak_mib": round(max(peak[0], now) / 1024, 1),
                                  "s": round(time.perf_counter() - started, 2)}
        if tracemalloc.is_tracing():
            held, most = tracemalloc.get_traced_memory()
            result["phases"][name].update(traced_mib=round(held / MIB, 1), traced_peak_mib=round(most / MIB, 1))
            tracemalloc.reset_peak()
            if name == "stats":  # the last step inside load: the listings are still alive
                result["top_lines_in_load"] = top_lines(tracemalloc.take_snapshot())
        peak[0] = 0

    def wrapped(name: str, real: Any) -> Any:
        def step(*a: Any, **k: Any) -> Any:
            started = time.perf_counter()
            value = real(*a, **k)
            mark(name, started)
            return value
        return step

    mark("start (torch and trainkit imported)", time.perf_counter())
    for name, attr in (("listing", "_list_files"), ("probe", "_in_shape"), ("decode or read store", "_decode"),
                       ("stats", "channel_stats"), ("carve", "_carve")):
        setattr(reader, attr, wrapped(name, getattr(reader, attr)))
    data = reader.load(root)
    started = time.perf_counter()
    training_problems(data)
    mark("data check", started)
    for name, split in (("train", data.train), ("val", data.val)):
        started = time.perf_counter()
        loader = BatchLoader(split, data.meta, 64, torch.device("cpu"), shuffle=name == "train")
        for x, _ in loader:
            del x
        mark(f"{name} loader epoch", started)
    result["samples"] = {"train": len(data.train), "val": len(data.val)}
    del data
    if state == "traced":
        result["top_lines_after"] = top_lines(tracemalloc.take_snapshot())
    started = time.perf_counter()
    ctypes.CDLL(None).malloc_trim(0)  # glibc: the freed heap it still holds goes back to the kernel
    mark("data dropped, malloc_trim(0)", started)
    stop.set()
    return result


def top_lines(snapshot: Any, n: int = 8) -> list[dict[str, Any]]:
    return [{"line": str(s.traceback[0]), "mib": round(s.size / MIB, 2), "blocks": s.count}
            for s in snapshot.statistics("lineno")[:n]]


def descendants(pid: int) -> list[int]:
    """The live descendants of `pid`."""
    parents: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None:
                parents.setdefault(stat[0], []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        kids = parents.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


# ----------------------------------------------------------------------------------------------------- reporting
def markdown(r: dict[str, Any]) -> str:
    m = r["machine"]
    lines = ["# Memory and the sample store", "",
             (f"Machine: {m['cpus']} cores ({m['cpu']}), {m['memory_gib']} GiB, kernel {m['kernel']}, Python "
              f"{m['python']}. Written by `benchmarks/memory.py`. Peak anonymous memory of the whole process tree "
              f"(trainkit and its decoding workers), sampled every {TICK_S * 1000:.0f} ms."), ""]
    if "scale" in r:
        lines += scale_table(r["scale"])
    if "phases" in r:
        lines += phases_table(r["phases"])
    if "cgroup" in r:
        lines += cgroup_table(r["cgroup"])
    if "rates" in r:
        workers = r["rates"]["workers"]
        lines += [f"## Decode rate (image_folder.load into a fresh store, {workers} worker processes)", "",
                  "| JPEG size | images | decode (s) | decode images/s | whole load (s) | whole load images/s |",
                  "|---|---:|---:|---:|---:|---:|"]
        for c in r["rates"]["cases"]:
            lines.append(f"| {c['image_size']}×{c['image_size']} | {c['images']:,} | {c['decode_s']:.1f} | "
                         f"{c['decode_images_per_s']:,} | {c['load_s']:.1f} | {c['load_images_per_s']:,} |")
        lines.append("")
    return "\n".join(lines)


def scale_table(s: dict[str, Any]) -> list[str]:
    lines = [f"## `trainkit train data=image_folder model=mlp` on 32×32 PNG folders ({' '.join(s['overrides'])})", "",
             ("| images | store (MiB) | run | exit | peak sum RssAnon (MiB) | peak sum Pss_Anon (MiB) | wall (s) | "
              "decode (s) | decode images/s |"),
             "|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    for v in s["runs"].values():
        phase = "fresh store (decode)" if v["decode_s"] else "store read"
        rate = f"{v['decode_images_per_s']:,}" if v.get("decode_images_per_s") else ""
        lines.append(f"| {v['images']:,} | {v['store_mib']:,.0f} | {phase} | {v['exit_code']} | "
                     f"{v['peak_rss_anon_mib']:,.0f} | {v['peak_pss_anon_mib']:,.0f} | {v['wall_s']:.1f} | "
                     f"{v['decode_s'] or ''} | {rate} |")
    lines.append("")
    for phase in ("decode", "read"):
        g = s[f"growth_{phase}_mib"]
        lines.append(f"Growth from the smallest to the largest folder, {phase} runs: sum RssAnon {g['rss_anon']:+.0f} "
                     f"MiB, sum Pss_Anon {g['pss_anon']:+.0f} MiB, for {g['store']:+,.0f} MiB of store.")
    return [*lines, ""]


def phases_table(p: dict[str, Any]) -> list[str]:
    runs = {k: v for k, v in p["runs"].items() if not k.endswith("traced")}
    names = list(next(iter(runs.values()))["phases"])
    lines = [("## Phase by phase, in one process (image_folder.load's steps, the data check, a loader epoch per "
              "split): sum Pss_Anon (MiB) after each phase, and its peak during it"), "",
             "| phase | " + " | ".join(runs) + " |", "|---|" + "---:|" * len(runs)]
    for name in names:
        cells = [f"{v['phases'][name]['after_mib']:,.0f} ({v['phases'][name]['peak_mib']:,.0f})" for v in runs.values()]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for key, v in p["runs"].items():
        if key.endswith("traced"):
            held = {name: f"{ph['traced_mib']} (peak {ph['traced_peak_mib']})"
                    for name, ph in v["phases"].items() if "traced_mib" in ph}
            lines += ["", f"Python memory (tracemalloc, {key}, MiB) after each phase: "
                      + ", ".join(f"{name} {mib}" for name, mib in held.items()) + ". Largest at the end of load: "
                      + "; ".join(f"`{t['line']}` {t['mib']} MiB in {t['blocks']:,} blocks"
                                  for t in v["top_lines_in_load"][:4])
                      + ". Still held once the data is dropped: "
                      + "; ".join(f"`{t['line']}` {t['mib']} MiB" for t in v["top_lines_after"][:2]) + "."]
    return [*lines, ""]


def cgroup_table(c: dict[str, Any]) -> list[str]:
    sm, b = c["small"], c["big"]

    def row(name: str, v: dict[str, Any], store: str, cap: str) -> str:
        checkpoint = "yes" if v.get("checkpoint_written") else ("no" if "checkpoint_written" in v else "")
        return (f"| {name} | {v['images']:,} | {store} | {cap} | {v['exit_code']} | {checkpoint} | "
                f"{v['peak_rss_anon_mib']:,.0f} | {v['peak_pss_anon_mib']:,.0f} | {v['peak_cgroup_rss_mib']:,.0f} | "
                f"{v['max_usage_mib']:,.0f} | {v['leftover_processes']} | {v['wall_s']:.1f} |")

    return [(f"## Under a memory cap (cgroup v1): {c['image_size']}×{c['image_size']} {c['format']}, "
             f"model.hidden=[{c['model_hidden']}]"), "",
            ("| run | images | store (MiB) | cap (MiB) | exit | checkpoint | peak sum RssAnon | peak sum Pss_Anon | "
             "peak cgroup rss | max_usage_in_bytes (MiB) | leftover processes | wall (s) |"),
            "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|",
            row("sets the cap (no cap)", sm, "", "none"),
            row("capped", b, f"{b['store_mib']:,.0f}", f"{c['cap_mib']:,}"), "",
            (f"Cap = the first run's peak anonymous memory + {c['margin_mib']} MiB. max_usage_in_bytes counts the page "
             f"cache too, which the kernel reclaims at the cap; the anonymous memory is what it kills for."), ""]


def machine() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    memory = _kib("/proc/meminfo", "MemTotal:") / (1 << 20)
    return {"cpus": os.cpu_count(), "cpu": cpu, "memory_gib": round(memory, 1), "kernel": platform.release(),
            "python": platform.python_version()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/tk-memory"))
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections: {', '.join(SECTIONS)}")
    parser.add_argument("--sizes", default="10000,100000", help="scale: the folders' numbers of images")
    parser.add_argument("--overrides", nargs="*", default=["trainer.limit_train_batches=50"],
                        help="more overrides for every trainkit run")
    parser.add_argument("--cgroup-size", type=int, default=224, help="cgroup: the pictures' height and width")
    parser.add_argument("--cgroup-hidden", type=int, default=64, help="cgroup: the MLP's hidden width")
    # The run that sets the cap must hold what every run holds at its peak: an evaluation holds two float batches at a
    # time (the loop's previous x while the loader cuts the next), so its validation split needs two full ones (at
    # least 2 × 256 images at data.batch_size=64, hence 6,000 with data.val_fraction=0.1).
    parser.add_argument("--cgroup-small", type=int, default=6000, help="cgroup: images in the run that sets the cap")
    parser.add_argument("--margin-mib", type=int, default=300, help="cgroup: the cap above the small run's peak")
    parser.add_argument("--store-ratio", type=float, default=1.75, help="cgroup: the big run's store over the cap")
    parser.add_argument("--rate-images-32", type=int, default=5000)
    parser.add_argument("--rate-images-224", type=int, default=2000)
    parser.add_argument("--quick", action="store_true", help="tiny folders: check the harness, not the figures")
    parser.add_argument("--out", type=Path, default=RESULTS / "memory.json")
    parser.add_argument("--probe", nargs=2, metavar=("STATE", "ROOT"), help=argparse.SUPPRESS)  # phases' own process
    args = parser.parse_args()
    if args.probe:
        print(json.dumps(probe_phases(*args.probe)))
        return
    args.sizes = [int(s) for s in args.sizes.split(",")]
    if args.quick:
        args.sizes, args.cgroup_small, args.margin_mib, args.store_ratio = [1000, 3000], 300, 100, 0.3
        args.rate_images_32, args.rate_images_224 = 1000, 300
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(chosen) - set(SECTIONS)
    if unknown:
        raise SystemExit(f"unknown sections {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    if "cgroup" in chosen and (os.geteuid() != 0 or not (CGROUP_ROOT / "memory.limit_in_bytes").exists()):
        raise SystemExit(f"the cgroup section needs root and the cgroup v1 memory controller at {CGROUP_ROOT}")
    args.workdir = args.workdir.absolute()
    if args.workdir.is_relative_to(ROOT):
        raise SystemExit(f"--workdir {args.workdir} is inside the repository: choose a folder outside it")
    args.workdir.mkdir(parents=True, exist_ok=True)
    result = json.loads(args.out.read_text()) if args.out.is_file() and not args.quick else {}
    result["machine"] = machine()
    for section in SECTIONS:
        if section in chosen:
            started = time.strftime("%Y-%m-%d %H:%M:%S")
            load = os.getloadavg()[0]
            value = globals()[section](args)
            result[section] = {**value, "measured_at": started, "load_avg": [load, os.getloadavg()[0]],
                               "quick": args.quick}
            if not args.quick:
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(json.dumps(result, indent=1) + "\n")  # after each section: nothing lost
    md = markdown(result)
    if not args.quick:
        args.out.with_suffix(".md").write_text(md + "\n")
    print(md)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
