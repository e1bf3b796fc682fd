"""Object storage (s3://, and any fsspec URL) for run directories, checkpoints and data: opening a URL's file
system with bounded timeouts, copying files both ways (an upload is whole or absent, never torn), local copies that
are fetched once and reused, and one-paragraph errors for a missing credential, bucket or endpoint.

Credentials and endpoints come from the usual environment of each store's own client (for S3: AWS_ACCESS_KEY_ID,
AWS_PROFILE, AWS_ENDPOINT_URL, ...), never from a config.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trainkit.errors import UserError

# Local paths and the URL schemes other code owns: `hf://` is the Hugging Face Hub's (data=hf reads it itself).
NOT_STORAGE = {"file", "local", "hf"}
# Stores whose single PUT (and multipart upload) makes an object appear whole or not at all.
ATOMIC_PUT = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss"}
# S3: a refused or silent endpoint fails within about connect_timeout × max_attempts seconds, not botocore's minutes.
CONNECT_TIMEOUT_S, READ_TIMEOUT_S, ATTEMPTS = 5, 60, 2


MARKER = ".remote"  # in a local staging folder of object storage: the URL it mirrors


class StorageError(UserError):
    """Object storage that cannot be used: a missing package, credential, bucket or object, or an endpoint that does
    not answer."""

    keeps_run_dir = True

    def __init__(self, message: str) -> None:  # a URL as typed may hold a newline: the paragraph stays one line
        super().__init__(message.translate(CONTROL))


CONTROL = {c: f"\\x{c:02x}" for c in (*range(32), 127)}


def is_url(value: Any) -> bool:
    """Whether `value` names object storage (`s3://bucket/key`, `gs://...`), not a local path."""
    if not isinstance(value, (str, Path)):
        return False
    match = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", str(value))
    return bool(match) and match.group(1).lower() not in NOT_STORAGE


def url_of(local: str | Path) -> str | None:
    """The URL that the local staging folder `local` (or a file or folder inside one) mirrors; None for a plain local
    path. A sweep job's folder `STAGING/3_lr=0.1` mirrors `URL/3_lr=0.1`."""
    here = Path(local).absolute()
    for folder in (here, *here.parents):
        marker = folder / MARKER
        if marker.is_file():
            base = marker.read_text().strip().rstrip("/")
            rel = here.relative_to(folder).as_posix()
            return base if rel == "." else f"{base}/{rel}"
    return None


def tidy(url: str) -> str:
    """`url` without trailing slashes (`s3://b/run/` is `s3://b/run`; `s3://` stays)."""
    head, _, rest = str(url).partition("://")
    return f"{head}://{rest.rstrip('/')}"


def protocol(url: str) -> str:
    return url.split("://", 1)[0].lower()


def filesystem(url: str) -> tuple[Any, str]:
    """The fsspec file system of `url` and the path in it. A missing client package names the extra to install."""
    try:
        import fsspec
    except ImportError:
        raise _missing(url, "fsspec") from None
    options: dict[str, Any] = {}
    if protocol(url) in ("s3", "s3a"):  # a fresh dict each time: botocore rewrites the one it is given
        options["config_kwargs"] = {"connect_timeout": CONNECT_TIMEOUT_S, "read_timeout": READ_TIMEOUT_S,
                                    "retries": {"max_attempts": ATTEMPTS, "mode": "standard"}}
    for name in ("botocore", "aiobotocore", "s3fs", "fsspec"):  # "Found credentials in ...": not the run's news
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        fs, path = fsspec.core.url_to_fs(url, **options)
    except ImportError as exc:
        raise _missing(url, str(exc)) from None
    except ValueError as exc:  # fsspec: "Protocol not known"
        raise StorageError(f"{url}: {exc}. trainkit reads and writes object storage through fsspec; use an s3:// "
                           f"URL (or another protocol fsspec knows, with its package installed).") from None
    loop = getattr(fs, "loop", None)  # an async file system's event loop (s3fs): a request that failed is reported
    if loop is not None:              # by trainkit's error; the loop's "exception never retrieved" goes to the log
        loop.set_exception_handler(lambda _loop, context: logging.getLogger(__name__).debug(context.get("message")))
    return fs, path


def _missing(url: str, said: str) -> StorageError:
    return StorageError(f"{url} needs a package that is not installed ({said.strip().rstrip('.')}). For s3:// "
                        f"install trainkit's `s3` extra: pip install 'trainkit[s3]' (in a source checkout: pip install "
                        f"-e '.[s3]'); for another protocol, the fsspec package that serves it (gcsfs, adlfs, ...).")


def explained(exc: BaseException, url: str, doing: str) -> StorageError:
    """What went wrong with object storage, in one paragraph that says how to fix it."""
    if isinstance(exc, StorageError):
        return exc
    name, said = type(exc).__name__, " ".join(str(exc).split())[:240]
    endpoint = os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_S3") or "the store's endpoint"
    bucket = url.split("://", 1)[-1].split("/", 1)[0]
    if name in ("NoCredentialsError", "PartialCredentialsError") or "credentials" in said.lower():
        why = (f"no credentials were found ({said}). Set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE "
               f"with a profile in ~/.aws/credentials, in the environment that runs trainkit (never in a config)")
    elif re.search(r"InvalidAccessKeyId|SignatureDoesNotMatch|ExpiredToken|InvalidToken|AccessDenied|Forbidden|"
                   r"PermissionError", f"{name} {said}") or isinstance(exc, PermissionError):
        why = (f"the credentials were refused ({said}). Check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or AWS_PROFILE, "
               f"and that they may read and write {bucket}")
    elif "bucket does not exist" in said.lower() or "NoSuchBucket" in said:
        why = f"the bucket {bucket} does not exist. Create it first (aws s3 mb s3://{bucket}), or fix the URL"
    elif re.search(r"Connect|Timeout|timed out|Unreachable|Name or service|resolve", f"{name} {said}", re.IGNORECASE) or \
            isinstance(exc, (ConnectionError, TimeoutError)):
        why = (f"{endpoint} does not answer ({said}). Check AWS_ENDPOINT_URL (or your network); trainkit gives up "
               f"after {CONNECT_TIMEOUT_S} s × {ATTEMPTS} tries")
    elif isinstance(exc, FileNotFoundError):
        why = f"nothing is stored there ({said}). Check the URL: `aws s3 ls {url}` lists what is"
    else:
        why = f"{name}: {said}"
    return StorageError(f"{url}: {doing} failed: {why}.")


def call(url: str, doing: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """fn(*args) with its error, if any, as a StorageError that says what `doing` failed and why."""
    try:
        return fn(*args, **kwargs)
    except (OSError, ValueError, RuntimeError, TimeoutError) as exc:
        raise explained(exc, url, doing) from None
    except Exception as exc:  # botocore's and aiohttp's own errors derive from Exception alone
        if type(exc).__module__.split(".")[0] in ("botocore", "aiobotocore", "aiohttp", "s3fs", "fsspec", "gcsfs",
                                                  "adlfs", "urllib3", "asyncio"):
            raise explained(exc, url, doing) from None
        raise


def probe(url: str, doing: str) -> tuple[Any, str]:
    """The file system of `url`, after checking that its bucket answers: credentials, endpoint and bucket are tested
    here, before anything is trained or written, within a bounded time."""
    fs, path = filesystem(url)
    bucket = url.partition("://")[2].split("/", 1)[0]
    if not bucket or (protocol(url) in ("s3", "s3a") and not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", bucket)):
        raise StorageError(f"{url} names no valid bucket{f' ({bucket!r})' if bucket else ''}: write "
                           f"{protocol(url)}://BUCKET/FOLDER, where BUCKET is 3 to 63 lowercase letters, digits, dots "
                           f"and hyphens (e.g. s3://my-runs/mnist).")
    if protocol(url) in ("s3", "s3a"):
        call(url, doing, fs.ls, bucket, refresh=True)  # a missing bucket, a refused key, a silent endpoint: said now
    return fs, path


def listing(fs: Any, path: str, url: str) -> dict[str, dict[str, Any]]:
    """Every object at or under `path`: relative name (POSIX) → its info (size, ETag, LastModified)."""
    found = call(url, "listing", fs.find, path, detail=True, withdirs=False)
    out = {}
    for name, info in found.items():
        rel = name[len(path):].lstrip("/") if name != path else ""
        if info.get("type", "file") == "file":
            out[rel] = info
    return out


def stamp(info: dict[str, Any]) -> str:
    """What identifies one stored version of an object: its ETag (or checksum) and size."""
    tag = info.get("ETag") or info.get("etag") or info.get("md5Hash") or info.get("mtime") or info.get("LastModified")
    return f"{tag}:{info.get('size')}"


def modified(info: dict[str, Any]) -> float | None:
    """When a stored object was written (seconds since the epoch), where the store says."""
    stored = info.get("LastModified") or info.get("mtime") or info.get("updated") or info.get("created")
    if hasattr(stored, "timestamp"):
        return float(stored.timestamp())
    return float(stored) if isinstance(stored, (int, float)) else None


def download(fs: Any, path: str, dest: Path, url: str, info: dict[str, Any] | None = None) -> None:
    """One object into the local file `dest`, through a temporary file beside it: `dest` is whole or absent."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(f".{dest.name}.part")
    try:
        call(url, "downloading", fs.get_file, path, str(part))
        stored = modified(info) if info is not None else None
        if stored is not None:  # the copy is as old as the object: a later change here is newer than the bucket's
            os.utime(part, (stored, stored))
        os.replace(part, dest)
    finally:
        part.unlink(missing_ok=True)


def upload(fs: Any, local: Path, path: str, url: str) -> None:
    """One local file to `path`. On S3 and its kind a PUT (or a multipart upload) appears whole or not at all; other
    stores get a temporary name first and a rename, so that a reader never sees a torn file either."""
    if protocol(url) in ATOMIC_PUT:
        call(url, f"uploading {local.name}", fs.put_file, str(local), path)
        return
    part = f"{path}.part-{os.getpid()}"
    call(url, f"uploading {local.name}", fs.put_file, str(local), part)
    call(url, f"uploading {local.name}", fs.mv, part, path)


def cache_root() -> Path:
    """trainkit's cache folder, $XDG_CACHE_HOME/trainkit or ~/.cache/trainkit: local copies of stored files, and the
    data caches of sources whose own folder is read-only."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "trainkit"


def local_folder(url: str, kind: str) -> Path:
    """A local folder for `url`, the same for the same URL (`kind`: runs, files)."""
    digest = hashlib.sha256(url.rstrip("/").encode()).hexdigest()[:16]
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", url.rstrip("/").rsplit("/", 1)[-1])[:40] or "root"
    return cache_root() / "remote" / kind / f"{name}-{digest}"


def fetch(url: str, skip: Callable[[str], bool] = lambda rel: False) -> Path:
    """A local copy of the object or the folder at `url`, downloaded once and reused while the stored objects are
    unchanged (their ETags and sizes are kept beside the copy): a data set, a checkpoint. `skip(relative name)`
    leaves objects out of a folder's copy."""
    fs, path = probe(url, "reading")
    folder = local_folder(url, "files")
    manifest = folder / ".manifest.json"
    if call(url, "reading", fs.isfile, path):
        objects = {"": call(url, "reading", fs.info, path)}
    else:
        objects = {rel: info for rel, info in listing(fs, path, url).items() if not skip(rel)}
        if not objects:
            raise StorageError(f"{url}: nothing is stored there. Check the URL: `aws s3 ls {url}/` lists what is.")
    try:
        kept = json.loads(manifest.read_text())
    except (OSError, ValueError):
        kept = {}
    target = folder / (url.rstrip("/").rsplit("/", 1)[-1] or "root")
    for rel, info in objects.items():
        dest = target / rel if rel else target
        if kept.get(rel) != stamp(info) or not dest.is_file():
            download(fs, f"{path}/{rel}" if rel else path, dest, url, info)
            kept[rel] = stamp(info)
            manifest.write_text(json.dumps(kept))
    return target
