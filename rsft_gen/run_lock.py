"""One writer per run directory: an exclusive lock on RUN_DIR/.rsft-gen.lock.

    from rsft_gen.run_lock import acquire, release
    acquire(run_dir)    # RecipeError naming the holder (pid, host, start time) if a live run has it
    ...                 # the whole run
    release(run_dir)    # also implicit when the process dies, however it dies

The lock is a `flock` on the lock file, so the kernel drops it when the holding
process ends (SIGKILL and the OOM killer included): a lock file left behind by a
dead run is stale and is taken over with a log line naming the old holder, never
an error. flock works across machines on NFS (Linux maps it to POSIX locks), so
two nodes pointed at one shared output_dir are refused too. The file holds the
holder's pid, host, start time and command, for the error message.

Processes forked by the run (data-loader workers, engine processes) inherit the
descriptor; we close their copy right after the fork, so a leftover child can
never keep the lock after its parent is gone. Within one process acquire is
re-entrant: a run that resumes in the same interpreter (tests, notebooks) gets
the lock it already holds.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path

from rsft_gen.config import RecipeError

log = logging.getLogger("rsft_gen")
LOCK_NAME = ".rsft-gen.lock"
_held: dict[Path, int] = {}  # lock file -> descriptor, in this process


def _close_in_child() -> None:
    for fd in _held.values():
        try:
            os.close(fd)  # the child's copy only: the parent keeps its lock
        except OSError:
            pass
    _held.clear()


os.register_at_fork(after_in_child=_close_in_child)


def _read(fd: int) -> dict:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        return json.loads(os.read(fd, 65536).decode() or "{}")
    except (OSError, ValueError):
        return {}


def describe(holder: dict) -> str:
    if not holder:
        return "holder unknown"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder["started"])) if "started" in holder else "?"
    return f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}, started {started}"


def _open_locked(path: Path) -> int:
    """A descriptor of `path` holding an exclusive flock; raises BlockingIOError if another process has it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BaseException:
            os.close(fd)
            raise
        # A releasing holder unlinks the file before unlocking: if we locked that old inode, retry on the new one.
        try:
            current = os.stat(path).st_ino
        except FileNotFoundError:
            current = None
        if current == os.fstat(fd).st_ino:
            return fd
        os.close(fd)


def acquire(run_dir: Path) -> None:
    """Take run_dir's lock for this process, or raise a RecipeError naming the live holder."""
    path = (Path(run_dir) / LOCK_NAME).resolve()
    if path in _held:
        return
    try:
        fd = _open_locked(path)
    except BlockingIOError:
        holder = {}
        try:
            holder = json.loads(path.read_text() or "{}")
        except (OSError, ValueError):
            pass
        raise RecipeError(
            f"output directory '{run_dir}' is in use by another rsft-gen run ({describe(holder)}; lock file {path}). "
            "Two runs writing one directory would corrupt it: wait for that run to finish or stop it, "
            "or set another output_dir."
        ) from None
    except OSError as e:
        if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
            raise
        log.warning(
            "%s: this file system does not support locks (%s); nothing stops a second run writing here",
            run_dir,
            e.strerror,
        )
        return
    previous = _read(fd)
    if previous and previous.get("pid") != os.getpid():
        log.warning(
            "%s: taking over a stale run lock (%s), which no running process holds: that run crashed or was killed",
            run_dir,
            describe(previous),
        )
    me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(), "argv": sys.argv}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
    _held[path] = fd


def release(run_dir: Path) -> None:
    """Drop run_dir's lock (no-op if this process does not hold it); the lock file goes too."""
    path = (Path(run_dir) / LOCK_NAME).resolve()
    fd = _held.pop(path, None)
    if fd is None:
        return
    try:
        path.unlink(missing_ok=True)  # before unlocking: a waiter that locked this inode sees it is gone and retries
    except OSError:
        pass
    try:
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
