"""Writing files so that nothing of the user's is lost: atomic writes, staged directories, run locks.

Every file ekd-edge writes appears whole or not at all (written to a temporary sibling, fsynced,
renamed). A directory is built in a hidden staging sibling named after the process that owns it,
so a killed process leaves something the next run recognises and removes, and that can never be
taken for a finished result. A run directory is guarded by a lock file holding its owner's pid.

A full disk, a file over the size limit or a read-only file system met by any writer becomes one
DiskError naming the destination the user gave (``writing``), never the hidden name it was being
built under. What is written gets the modes the umask gives, like any other program's files.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path

from ekd_edge.errors import DiskError, EkdError

STAGING_PREFIX = ".ekd-staging"
LOCK_NAME = ".ekd-edge.lock"

# The machine's state, not a bug: the user makes room, raises the limit or mounts it writable.
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})
KEPT = "(nothing of yours was changed; finished work is kept, run the same command again once this is fixed)"

_RUST_OS_ERROR = re.compile(r"\(os error (\d+)\)")   # how Rust's std::io::Error ends (safetensors)


def disk_error(exc: BaseException | None) -> OSError | None:
    """The OSError of DISK_ERRNOS behind ``exc``, if any. Serialisers wrap it: torch.save raises a
    RuntimeError whose context is the ENOSPC of the file it was writing, safetensors an error of its
    own whose text ends in Rust's "(os error 28)"."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in DISK_ERRNOS:
            return exc
        found = None if isinstance(exc, OSError) else _RUST_OS_ERROR.search(str(exc))
        if found and int(found.group(1)) in DISK_ERRNOS:
            return OSError(int(found.group(1)), os.strerror(int(found.group(1))))
        exc = exc.__cause__ or exc.__context__
    return None


def user_path(path: str | Path) -> Path:
    """The destination a hidden staging folder or temporary file stands for (what the user named)."""
    path = Path(path)
    parts = list(path.parts)
    for i, part in enumerate(parts):
        if part.startswith(f"{STAGING_PREFIX}."):   # .ekd-staging.<name>.<pid>.<random>
            return Path(*parts[:i], part[len(STAGING_PREFIX) + 1:].rsplit(".", 2)[0])
    if path.name.startswith(".") and path.name.endswith(".tmp"):   # .<name>.<random>.tmp
        return path.with_name(path.name[1:].rsplit(".", 2)[0])
    return path


@contextlib.contextmanager
def writing(destination: str | Path):
    """Map a full disk, a file over the size limit or a read-only file system met while the block
    writes ``destination`` to one DiskError naming it: every writer reports through here."""
    try:
        yield
    except DiskError:
        raise
    except Exception as exc:
        found = disk_error(exc)
        if found is None:
            raise
        raise DiskError(f"{user_path(destination)}: {found.strerror or os.strerror(found.errno)} while writing it "
                        f"{KEPT}") from None


def current_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


@contextlib.contextmanager
def atomic_file(path: str | Path):
    """A binary file that appears at ``path`` whole when the block ends (temporary sibling, fsync,
    rename), or not at all: an existing ``path`` stays as it was if anything fails."""
    path = Path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            os.fchmod(fd, 0o666 & ~current_umask())   # mkstemp's file is private; a result follows the umask
            with os.fdopen(fd, "wb") as fh:
                yield fh
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary sibling and a rename: readers see old or new, never half."""
    with atomic_file(path) as fh:
        fh.write(data)
    return Path(path)


def write_text_atomic(path: str | Path, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, payload) -> Path:
    return write_text_atomic(path, json.dumps(payload, indent=2, ensure_ascii=False) + "\n")


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this machine."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def staging_dir(final: str | Path) -> Path:
    """A new hidden directory beside ``final`` to build it in; leftovers of dead processes are removed first."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(final)
    return Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}.{final.name}.{os.getpid()}.", dir=final.parent))


def remove_stale_staging(final: str | Path) -> list[Path]:
    """Remove staging directories for ``final`` whose owning process no longer runs; returns them."""
    final = Path(final)
    removed = []
    if not final.parent.is_dir():
        return removed
    for candidate in final.parent.glob(f"{STAGING_PREFIX}.{final.name}.*"):
        pid_text = candidate.name[len(f"{STAGING_PREFIX}.{final.name}."):].split(".", 1)[0]
        if pid_text.isdigit() and not pid_alive(int(pid_text)):
            shutil.rmtree(candidate, ignore_errors=True)
            removed.append(candidate)
    return removed


def fsync_tree(directory: str | Path) -> None:
    for path in Path(directory).rglob("*"):
        if path.is_file():
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())


def replace_dir(new: str | Path, target: str | Path) -> None:
    """Put directory ``new`` at ``target`` by rename; an existing ``target`` is moved aside, then removed.

    The caller decides whether ``target`` may be replaced (see export/destination.py).
    """
    new, target = Path(new), Path(target)
    fsync_tree(new)
    _default_permissions(new)
    if not target.exists():
        os.replace(new, target)
        return
    old = staging_dir(target)
    os.rmdir(old)
    os.replace(target, old)
    try:
        os.replace(new, target)
    except OSError:
        os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def publish_dir(new: str | Path, final: str | Path) -> bool:
    """Rename the finished build ``new`` to ``final``, a path named by a hash of its content (a cache).

    Two processes may build the same key at once (runs sharing a cache directory): the first rename
    wins and the other's identical build is dropped. Returns False when ``new`` was published,
    True when another process had published ``final`` first.
    """
    _default_permissions(Path(new))
    try:
        os.replace(new, final)
    except OSError:
        if not Path(final).is_dir():
            raise
        shutil.rmtree(new, ignore_errors=True)
        return True
    return False


def _default_permissions(tree: Path) -> None:
    """Staging folders are private (0700) while they are built; the result gets the usual modes."""
    umask = current_umask()
    for path in [tree, *tree.rglob("*")]:
        if path.is_dir():
            path.chmod(0o777 & ~umask)
        elif path.is_file():
            path.chmod(0o666 & ~umask)


@contextlib.contextmanager
def staged(final: str | Path):
    """Yield a staging directory for ``final``; it is removed whatever happens unless the caller moved it.

    A full disk met while the block builds it is reported as ``final``'s (writing)."""
    with writing(final):
        stage = staging_dir(final)
        try:
            yield stage
        finally:
            shutil.rmtree(stage, ignore_errors=True)


class RunLock:
    """An exclusive lock on a directory: ``DIR/.ekd-edge.lock``, an flock that holds the owner's pid.

    The kernel drops an flock when its process dies, however it dies, so a killed run never
    blocks the next one; the pid left in the file tells the next run that it takes over a stale
    lock (reported through ``on_stale``). A second live process is refused with one line.

    ``delegate_of``: the pid of a parent that holds the lock and started this process to do part of
    its work (ladder.py's second job). Such a child is let in while that parent holds the lock, and
    only then: anyone else, or the child of a parent that no longer holds it, is refused as usual.
    """

    def __init__(self, directory: str | Path, on_stale=None, delegate_of: int | None = None):
        self.directory = Path(directory)
        self.path = self.directory / LOCK_NAME
        self.on_stale = on_stale or (lambda message: None)
        self.delegate_of = delegate_of
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        import fcntl

        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_fd(fd)
            os.close(fd)
            if self.delegate_of is not None and holder.get("pid") == self.delegate_of == os.getppid():
                return self   # the parent's lock covers its own helper process
            raise EkdError(f"{self.directory}: in use by process {holder.get('pid', '?')} (lock {self.path}); "
                           "wait for it to finish or stop it") from None
        previous = _read_fd(fd)
        if previous.get("pid") not in (None, os.getpid()):
            self.on_stale(f"{self.path}: lock left by process {previous['pid']}, which no longer runs; taken over")
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)   # an empty lock file means "released cleanly"
            os.close(self._fd)          # closing drops the flock
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_fd(fd: int) -> dict:
    try:
        return json.loads(os.pread(fd, 4096, 0) or b"{}")
    except ValueError:
        return {}
