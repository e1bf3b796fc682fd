"""Run directories on object storage (s3://, and any fsspec URL). A run writes into a local staging folder, as it
would into any run directory, and a mirror uploads each file there as it completes: a checkpoint at once (with the
files written before it), the other files at most every few seconds, everything at the end. The staging folder
knows its URL (the `.remote` file in it), so a sweep job's folder inside a staged sweep knows its own.

A run directory that a URL names first comes down into its staging folder (its checkpoints but the epoch ones), so
that resuming, and every reader of run directories, works on it as on a local one.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from trainkit import storage
from trainkit.rundirs.claim import RunDirError, is_locked

KEEP_DOTTED = {".hydra"}  # the one dotted folder a run directory shares; .lock, .remote and temporary files stay here
THROTTLE_S = 10.0  # a file other than a checkpoint (metrics.csv, TensorBoard's events) goes up at most this often


MARKER = storage.MARKER
is_url = storage.is_url
url_of = storage.url_of


def _kept_local(rel: str) -> bool:
    """Files of a staging folder that are not the run's: the lock, the marker, temporary and partial files."""
    parts = rel.split("/")
    return (any(p.startswith(".") and p not in KEEP_DOTTED for p in parts)
            or parts[-1].endswith((".tmp", ".part")))


def _epoch_checkpoint(rel: str) -> bool:
    return rel.startswith("checkpoints/") and rel.endswith(".ckpt") and rel.rsplit("/", 1)[-1] not in (
        "last.ckpt", "best.ckpt")


def stage(url: str, what: str = "the run directory") -> Path:
    """The local staging folder of the run directory (or sweep directory) at `url`, holding what the URL holds
    already (a run to continue; its epoch checkpoints stay in the bucket). Credentials, endpoint and bucket are
    checked first, within a bounded time. A staging folder in use by another process on this machine is refused."""
    url = storage.tidy(url)
    fs, path = storage.probe(url, f"opening {what}")
    folder = _staging(url)
    if folder.is_dir() and is_locked(folder):
        raise RunDirError(f"{url}: {what} is in use by another trainkit process on this machine (its staging folder "
                          f"{folder} is locked); two processes never write to one run. Wait for it to end.")
    shutil.rmtree(folder, ignore_errors=True)  # the bucket is the truth: what a killed run left here goes
    folder.mkdir(parents=True)
    _pull(fs, path, url, folder)
    (folder / MARKER).write_text(url + "\n")
    return folder


def _staging(url: str) -> Path:
    folder = storage.local_folder(url, "runs")
    rank = os.environ.get("RANK", "0")
    if rank not in ("", "0"):  # another process of a data-parallel run on this machine: a folder of its own
        folder = folder.with_name(f"{folder.name}.rank{rank}")
    return folder


def run_url(url: str) -> str:
    """The run directory of `url`: the URL itself, or the run that a checkpoint URL (RUN/checkpoints/x.ckpt) is in."""
    url = storage.tidy(url)
    head, _, rest = url.partition("://")
    if not rest.endswith(".ckpt") or "/" not in rest:  # s3://bucket.ckpt is a bucket, not a checkpoint
        return url
    parent = rest.rsplit("/", 1)[0]
    if parent.endswith("/checkpoints"):
        parent = parent.rsplit("/", 1)[0]
    return f"{head}://{parent}"


def staged(url: str) -> Path:
    """The local path of `url` (a run directory, or a checkpoint in one) in its run's staging folder: the one this
    line made (the command line stages a run directory before it runs), else a new one. An epoch checkpoint, which
    staging leaves in the bucket, comes down when named."""
    run = run_url(url)
    folder = _staging(run)
    if storage.url_of(folder) != run:
        folder = stage(run)
    local = folder / storage.tidy(url)[len(run):].lstrip("/")
    if local != folder and not local.is_file():
        fetch_to(storage.tidy(url), local)
    return local


def fetch_to(url: str, local: Path) -> None:
    """The object at `url` into the local file `local` (whole or absent)."""
    fs, path = storage.filesystem(url)
    storage.download(fs, path, Path(local), url)


def readable(url: str) -> Path:
    """A local copy of the run directories at or under `url` for reading them (`trainkit runs`, trainkit.runs):
    their configs, metrics and summaries, without checkpoints or TensorBoard events."""
    copy = storage.fetch(url, skip=lambda rel: rel.endswith((".ckpt", ".pt", ".onnx", ".png")) or
                         "events.out.tfevents" in rel or _kept_local(rel))
    (copy / MARKER).write_text(storage.tidy(url) + "\n")  # what is shown of it is the URL
    return copy


def checkpoint(url: str) -> Path:
    """A local copy of the checkpoint at `url`: a .ckpt object, or a run directory's best (else last) checkpoint."""
    url = storage.tidy(url)
    if not url.endswith(".ckpt"):
        fs, path = storage.probe(url, "reading the checkpoint")
        for name in ("best.ckpt", "last.ckpt"):
            if storage.call(url, "reading the checkpoint", fs.isfile, f"{path}/checkpoints/{name}"):
                return storage.fetch(f"{url}/checkpoints/{name}")
        raise storage.StorageError(f"{url} holds no checkpoints/best.ckpt or checkpoints/last.ckpt: give a .ckpt "
                                   f"URL written by trainkit, or the URL of a run directory (hydra.run.dir=...).")
    return storage.fetch(url)


_ACTIVE: dict[Path, Mirror] = {}  # the mirror of each staging folder this process uploads, while it runs


class Mirror:
    """Uploads what changes in `folder` to `url`, from a thread, until closed; a file deleted here (an old epoch
    checkpoint) goes there too. `wake()` asks for an upload now (a checkpoint was written). An upload that fails is
    kept in `error`, and the mirror stops: the run must stop too (its files no longer reach the bucket)."""

    def __init__(self, folder: Path, url: str, interval: float = 1.0) -> None:
        self.folder, self.url, self.interval = folder, storage.tidy(url), interval
        self.fs, self.path = storage.filesystem(self.url)
        self.sent = self._in_bucket()
        self.added: set[str] = set()  # objects this mirror made: what `undo` removes
        self.sent_at: dict[str, float] = {}
        self.error: storage.StorageError | None = None
        self.newest_checkpoint: str | None = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="trainkit-mirror", daemon=True)
        self.paused = False  # while other processes write this run (written_elsewhere)

    def _in_bucket(self) -> dict[str, tuple[int, int]]:
        """The local files that the bucket holds already (what came down at staging): the rest goes up."""
        there = _stored(self.fs, self.path, self.url)
        return {rel: sig for rel, sig in self._scan().items() if _same(there.get(rel), sig)}

    def _scan(self) -> dict[str, tuple[int, int]]:
        found = {}
        for path in self.folder.rglob("*"):
            rel = path.relative_to(self.folder).as_posix()
            if _kept_local(rel):
                continue
            try:
                st = path.stat()
            except OSError:  # replaced or removed meanwhile: the next pass sees what took its place
                continue
            if path.is_file():
                found[rel] = (st.st_size, st.st_mtime_ns)
        return found

    def start(self) -> Mirror:
        _ACTIVE[self.folder.resolve()] = self
        self._thread.start()
        return self

    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            if self.paused:
                continue
            try:
                self.sync(final=False)
            except Exception as exc:  # the run's thread says it (the callback, or close): never this thread
                self.error = storage.explained(exc, self.url, "uploading")
                return

    def sync(self, final: bool) -> None:
        """One pass: changed files up (checkpoints after the files the run wrote before them), deleted checkpoints
        removed. Non-final passes hold back files uploaded less than THROTTLE_S ago,
        unless a checkpoint changed."""
        with self._lock:
            now = self._scan()
            changed = [rel for rel, sig in now.items() if self.sent.get(rel) != sig]
            # last.ckpt first: it is what a resume reads, so the bucket never holds a newer epoch checkpoint without it
            checkpoints = sorted((r for r in changed if r.endswith(".ckpt")), key=lambda r: r != "checkpoints/last.ckpt")
            others = [r for r in changed if not r.endswith(".ckpt")]
            if not (final or checkpoints):
                clock = time.monotonic()
                others = [r for r in others if clock - self.sent_at.get(r, -THROTTLE_S) >= THROTTLE_S]
            for rel in [*others, *checkpoints]:
                try:
                    storage.upload(self.fs, self.folder / rel, f"{self.path}/{rel}", f"{self.url}/{rel}")
                except storage.StorageError:
                    if not (self.folder / rel).exists():  # an old epoch checkpoint, removed since the scan
                        now.pop(rel)
                        continue
                    raise
                if rel not in self.sent:
                    self.added.add(rel)
                self.sent[rel], self.sent_at[rel] = now[rel], time.monotonic()
                if rel == "checkpoints/last.ckpt":
                    self.newest_checkpoint = rel
            # Only a checkpoint this mirror put there: another process may have emptied this folder (a Ray worker
            # staging the same URL on this machine), and what the bucket held before is not this run's to remove.
            for rel in [r for r in self.sent if r not in now and r.endswith(".ckpt") and r in self.added]:
                storage.call(self.url, f"removing {rel}", self.fs.rm, f"{self.path}/{rel}")
                del self.sent[rel]

    def close(self, final: bool = True) -> None:
        """Stop the thread; with `final`, upload what is left (unless an upload already failed)."""
        _ACTIVE.pop(self.folder.resolve(), None)
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join()
        if final and self.error is None:
            try:
                self.sync(final=True)
            except storage.StorageError as exc:
                self.error = exc

    def undo(self) -> None:
        """Remove what this mirror added to the bucket: a line that failed before any result leaves nothing there, as
        it leaves no run directory here."""
        for rel in sorted(self.added):
            try:
                self.fs.rm(f"{self.path}/{rel}")
            except Exception:  # best effort: the line's own error is what the user needs to read
                pass
        self.added.clear()

    def failure(self, finished: bool) -> storage.StorageError:
        """The upload error as the run's error: where the run's files are and how to go on."""
        assert self.error is not None
        saved = (f"its last complete checkpoint in the bucket ({self.url}/{self.newest_checkpoint}) resumes with "
                 f"resume={self.url}" if self.newest_checkpoint else "no checkpoint reached the bucket")
        done = ("The run finished, but its files did not all reach the bucket" if finished else
                "The run stopped, since what it writes no longer reaches the bucket")
        return storage.StorageError(f"{self.error} {done}: {saved}. Every file is also in the local staging folder "
                                    f"{self.folder} (until a run of this URL starts here again).")


@contextmanager
def written_elsewhere(folder: Path) -> Iterator[None]:
    """While the run at `folder`'s URL is written by other processes that upload it themselves (Ray Train's workers,
    on any node), this process's mirror of `folder` waits; afterwards `folder` becomes what the bucket holds (its
    summary and checkpoints, for this process to read), and nothing of it goes up again."""
    url = url_of(folder)
    mirror = _ACTIVE.get(Path(folder).resolve())
    if url is None:
        yield
        return
    if mirror is not None:
        mirror.paused = True
    try:
        yield
    finally:
        fs, path = storage.filesystem(url)
        _pull(fs, path, url, Path(folder))
        if mirror is not None:
            with mirror._lock:
                mirror.sent.update(mirror._scan())
            mirror.paused = False


def sync_up(folder: Path) -> None:
    """Upload what `folder` (a staging folder, or one inside one) holds and its URL lacks or holds older or of
    another size: a sweep's own files (its table and curves) at its end, after each job uploaded its own."""
    url = url_of(folder)
    if url is None:
        return
    fs, path = storage.filesystem(url)
    there = _stored(fs, path, url)
    for local in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = local.relative_to(folder).as_posix()
        st = local.stat()
        if not _kept_local(rel) and not _same(there.get(rel), (st.st_size, st.st_mtime_ns)):
            storage.upload(fs, local, f"{path}/{rel}", f"{url}/{rel}")


def _pull(fs: Any, path: str, url: str, folder: Path) -> None:
    """What the bucket holds at `path` into `folder` (its epoch checkpoints aside), where the local file is not
    already that object."""
    for rel, info in _stored(fs, path, url).items():
        local = folder / rel
        if rel and not _kept_local(rel) and not _epoch_checkpoint(rel) and not (
                local.is_file() and _same(info, (local.stat().st_size, local.stat().st_mtime_ns))):
            storage.download(fs, f"{path}/{rel}", local, url, info)


def _stored(fs: Any, path: str, url: str) -> dict[str, dict[str, Any]]:
    return storage.listing(fs, path, url) if storage.call(url, "listing", fs.isdir, path) else {}


def _same(info: dict[str, Any] | None, sig: tuple[int, int]) -> bool:
    """Whether the stored object `info` is the local file of (size, mtime in ns) `sig`: the same size, and written
    after the file last changed (a downloaded copy has the object's own time)."""
    if info is None or info.get("size") != sig[0]:
        return False
    stored = storage.modified(info)
    return stored is not None and sig[1] / 1e9 <= stored + 1e-3
