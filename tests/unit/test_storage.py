"""Object storage, unit by unit: URLs, errors, and the mirror of a staging folder, on fsspec's in-memory file system
(the S3 server itself is in tests/e2e/test_s3.py)."""

from __future__ import annotations

import os
import time

import fsspec
import pytest
from fuzzing import bounded, examples
from hypothesis import given
from hypothesis import strategies as st

from trainkit import storage
from trainkit.rundirs import remote


@pytest.mark.parametrize(("value", "url"), [("s3://b/run", True), ("gs://b/x", True), ("memory://x", True),
                                            ("outputs/run", False), ("file:///tmp/x", False), ("hf://datasets/x", False),
                                            ("/abs/s3://x", False), ("3s://x", False), (None, False), (3, False)])
def test_what_names_object_storage(value, url):
    assert storage.is_url(value) is url


def test_tidy_and_url_of_a_staging_folder(tmp_path):
    assert storage.tidy("s3://b/run//") == "s3://b/run" and storage.tidy("s3://") == "s3://"
    (tmp_path / "sweep" / "3_lr=0.1" / "checkpoints").mkdir(parents=True)
    (tmp_path / "sweep" / storage.MARKER).write_text("s3://b/sweep/\n")
    assert storage.url_of(tmp_path / "sweep") == "s3://b/sweep"
    assert storage.url_of(tmp_path / "sweep" / "3_lr=0.1" / "checkpoints") == "s3://b/sweep/3_lr=0.1/checkpoints"
    assert storage.url_of(tmp_path) is None


def test_errors_say_what_to_fix():
    from botocore.exceptions import EndpointConnectionError, NoCredentialsError

    url = "s3://my-runs/a"
    said = {
        "no credentials were found": NoCredentialsError(),
        "the credentials were refused": PermissionError("The AWS Access Key Id you provided does not exist"),
        "the bucket my-runs does not exist": FileNotFoundError("The specified bucket does not exist"),
        "does not answer": EndpointConnectionError(endpoint_url="http://127.0.0.1:1"),
        "nothing is stored there": FileNotFoundError("my-runs/a"),
    }
    for words, exc in said.items():
        message = str(storage.explained(exc, url, "reading"))
        assert message.startswith(f"{url}: reading failed: ") and words in message, message
        assert "\n" not in message


@pytest.mark.parametrize("url", ["s3://", "s3:///run", "s3://Bad_Bucket/run", "s3://ab/run"])
def test_a_url_without_a_valid_bucket_is_refused_before_any_request(url):
    with pytest.raises(storage.StorageError, match="names no valid bucket"):
        storage.probe(url, "opening")


def test_a_missing_client_package_names_the_extra(monkeypatch):
    import builtins

    real = builtins.__import__

    def no_gcsfs(name, *args, **kwargs):
        if name.startswith("gcsfs"):
            raise ImportError("Install gcsfs to access Google Storage")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_gcsfs)
    with pytest.raises(storage.StorageError, match=r"trainkit\[s3\]"):
        storage.filesystem("gs://bucket/run")


@pytest.fixture
def memory(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    fs = fsspec.filesystem("memory")
    yield fs
    fs.rm("/runs", recursive=True) if fs.exists("/runs") else None


def test_the_mirror_uploads_checkpoints_at_once_and_the_rest_throttled_and_at_the_end(memory):
    folder = remote.stage("memory://runs/a")
    assert remote.url_of(folder) == "memory://runs/a"
    mirror = remote.Mirror(folder, "memory://runs/a")
    (folder / "metrics.csv").write_text("epoch\n1\n")
    (folder / ".hydra").mkdir()
    (folder / ".hydra" / "config.yaml").write_text("a: 1\n")
    (folder / "summary.json.tmp").write_text("{}")  # temporary files and the lock stay local
    (folder / ".lock").write_text("1")
    mirror.sync(final=False)
    assert sorted(memory.find("/runs/a")) == ["/runs/a/.hydra/config.yaml", "/runs/a/metrics.csv"]
    (folder / "metrics.csv").write_text("epoch\n1\n2\n")
    mirror.sync(final=False)  # uploaded a moment ago: held back
    assert memory.cat("/runs/a/metrics.csv") == b"epoch\n1\n"
    (folder / "checkpoints").mkdir()
    (folder / "checkpoints" / "epoch001-step0000010.ckpt").write_bytes(b"e1")
    (folder / "checkpoints" / "last.ckpt").write_bytes(b"e1")
    mirror.sync(final=False)  # a checkpoint: at once, with the files written before it
    assert memory.cat("/runs/a/checkpoints/last.ckpt") == b"e1"
    assert memory.cat("/runs/a/metrics.csv") == b"epoch\n1\n2\n"
    (folder / "checkpoints" / "epoch001-step0000010.ckpt").unlink()  # keep_last_k removed it: so does the bucket
    (folder / "checkpoints" / "epoch002-step0000020.ckpt").write_bytes(b"e2")
    (folder / "summary.json").write_text('{"status": "finished"}')
    mirror.start().close()
    assert sorted(p.rsplit("/", 1)[-1] for p in memory.find("/runs/a/checkpoints")) == [
        "epoch002-step0000020.ckpt", "last.ckpt"]
    assert memory.cat("/runs/a/summary.json") == b'{"status": "finished"}'
    assert not any(p.endswith((".tmp", ".lock", ".remote")) or ".part-" in p for p in memory.find("/runs"))


def test_staging_brings_the_run_down_but_its_epoch_checkpoints_and_a_locked_one_is_refused(memory):
    memory.pipe({"/runs/b/checkpoints/last.ckpt": b"L", "/runs/b/checkpoints/epoch003-step0000030.ckpt": b"E",
                 "/runs/b/metrics.csv": b"epoch\n1\n", "/runs/b/.hydra/config.yaml": b"a: 1\n"})
    folder = remote.stage("memory://runs/b/")
    got = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert got == [".hydra/config.yaml", ".remote", "checkpoints/last.ckpt", "metrics.csv"]
    (folder / "stale.txt").write_text("from a killed run")
    from trainkit.rundirs.claim import RunDirError, lock

    with lock(folder), pytest.raises(RunDirError, match="in use by another trainkit process"):
        remote.stage("memory://runs/b")
    again = remote.stage("memory://runs/b")
    assert again == folder and not (folder / "stale.txt").exists(), "the bucket is the truth"


def test_a_failed_upload_becomes_the_runs_error_with_where_to_go_on(memory, monkeypatch):
    folder = remote.stage("memory://runs/c")
    mirror = remote.Mirror(folder, "memory://runs/c", interval=0.01).start()
    (folder / "checkpoints").mkdir()
    (folder / "checkpoints" / "last.ckpt").write_bytes(b"L")
    mirror.wake()
    deadline = time.time() + 10
    while not memory.exists("/runs/c/checkpoints/last.ckpt"):
        assert time.time() < deadline
        time.sleep(0.01)

    def refused(*args, **kwargs):
        raise ConnectionRefusedError("connection refused")

    monkeypatch.setattr(mirror.fs, "put_file", refused)
    (folder / "metrics.csv").write_text("epoch\n")
    (folder / "checkpoints" / "last.ckpt").write_bytes(b"L2")
    os.utime(folder / "checkpoints" / "last.ckpt", (time.time() + 5, time.time() + 5))
    mirror.wake()
    while mirror.error is None:
        assert time.time() < deadline
        time.sleep(0.01)
    mirror.close()
    message = str(mirror.failure(finished=False))
    assert "does not answer" in message and "The run stopped" in message, message
    assert "resume=memory://runs/c" in message and str(folder) in message, message


def test_undo_removes_only_what_the_mirror_added(memory):
    memory.pipe({"/runs/d/metrics.csv": b"epoch\n1\n"})
    folder = remote.stage("memory://runs/d")
    mirror = remote.Mirror(folder, "memory://runs/d")
    (folder / ".hydra").mkdir()
    (folder / ".hydra" / "config.yaml").write_text("a: 1\n")
    mirror.sync(final=True)
    assert memory.exists("/runs/d/.hydra/config.yaml")
    mirror.undo()
    assert memory.find("/runs/d") == ["/runs/d/metrics.csv"]


URL_PARTS = st.sampled_from(["s3://", "s3a://", "gs://", "memory://", "nosuch://", "s3:///", "file://", "hf://", ""])
SEGMENT = st.one_of(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12),
                    st.sampled_from(["my-runs", "a.b-c", "run", "checkpoints", "last.ckpt", "..", "%00", " "]))


@given(scheme=URL_PARTS, segments=st.lists(SEGMENT, max_size=4), ckpt=st.booleans())
@examples(30)
def test_fuzz_any_url_either_works_or_is_one_storage_error(scheme, segments, ckpt, monkeypatch):
    """What a user can type after hydra.run.dir=, resume= or ckpt=: a URL's helpers never crash, and opening it ends
    in a file system or in one StorageError paragraph, within seconds (the endpoint here refuses at once)."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # the discard port: nothing listens
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    url = scheme + "/".join(segments) + (".ckpt" if ckpt else "")
    with bounded(30):
        if not storage.is_url(url):
            return
        assert storage.tidy(storage.tidy(url)) == storage.tidy(url)
        assert remote.run_url(url).startswith(url.split("://")[0] + "://")
        try:
            storage.probe(storage.tidy(url), "opening")
        except storage.StorageError as exc:
            assert "\n" not in str(exc).strip() and str(exc).startswith(storage.tidy(url).split("://")[0]), str(exc)
