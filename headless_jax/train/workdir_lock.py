"""One run per workdir: `<workdir>/run.lock` names the holder (host, pid) and is refreshed while it trains.

What it relies on: the lock file is created with O_CREAT | O_EXCL, which is atomic on local disks and on NFS v3+;
on object stores (gs://), where there is no exclusive create, it is written and read back, which leaves a
window of a few milliseconds in which two runs started at once could both pass. A holder that crashed leaves
the file behind: on the same host the lock is taken over when its pid is gone; from another host, when its
heartbeat (refreshed at log steps, at most once a minute) is older than `stale_after_s`.
"""
import json
import os
import socket
import time

from etils import epath

LOCK_FILE = "run.lock"


class WorkdirError(RuntimeError):
    """A workdir that cannot hold this run; the message names the fix."""


class WorkdirLocked(WorkdirError):
    """Another live run holds the workdir; the message names it and the way out."""


def usable_workdir(workdir: str) -> epath.Path:
    """`workdir` as a directory this process can write (created if missing), or WorkdirError naming the fix."""
    path = epath.Path(workdir)
    if path.exists() and not path.is_dir():
        raise WorkdirError(f"--workdir={workdir} is a file, not a directory; give a directory (it is created if "
                           "missing)")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write_test.{socket.gethostname()}.{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise WorkdirError(f"--workdir={workdir} cannot be written ({error.strerror or error}); give a directory "
                           "this user can create and write") from None
    return path


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


class WorkdirLock:
    def __init__(self, workdir: epath.PathLike, stale_after_s: float = 600.0):
        self.path = epath.Path(workdir) / LOCK_FILE
        self.stale_after_s = stale_after_s
        self.me = {"host": socket.gethostname(), "pid": os.getpid()}
        self._refreshed_at = time.monotonic()

    def acquire(self) -> None:
        """Takes the lock, or raises WorkdirLocked naming the live holder; a stale lock is taken over."""
        holder = self._holder()
        if holder is not None and not self._mine(holder):
            if not self._stale(holder):
                raise WorkdirLocked(f"{self.path.parent} is in use by the run of pid {holder['pid']} on host "
                                    f"{holder['host']} (heartbeat {time.time() - holder['heartbeat']:.0f} s ago); "
                                    "wait for it, stop it (SIGTERM saves a checkpoint), or use another --workdir")
            self.path.unlink()  # its holder crashed
        if holder is None or not self._mine(holder):
            self._create()
        if not self._mine(self._holder()):  # an object store: another run wrote in between
            raise WorkdirLocked(f"{self.path.parent}: another run took the lock as this one started; use another "
                                "--workdir or wait for it")

    def refresh(self, every_s: float = 60.0) -> None:
        """The heartbeat, proof to other hosts that the holder is alive: rewritten at most every `every_s`
        (object stores rate-limit writes to one object)."""
        if time.monotonic() - self._refreshed_at >= every_s:
            self.path.write_bytes(self._contents())
            self._refreshed_at = time.monotonic()

    def release(self) -> None:
        if self._mine(self._holder()):
            self.path.unlink()

    def _holder(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except (FileNotFoundError, ValueError):
            return None

    def _mine(self, holder: dict | None) -> bool:
        return holder is not None and (holder.get("host"), holder.get("pid")) == (self.me["host"], self.me["pid"])

    def _stale(self, holder: dict) -> bool:
        if holder.get("host") == self.me["host"]:
            return not _pid_alive(int(holder["pid"]))
        return time.time() - float(holder.get("heartbeat", 0.0)) > self.stale_after_s

    def _contents(self) -> bytes:
        return json.dumps(dict(self.me, heartbeat=time.time())).encode()

    def _create(self) -> None:
        if "://" in str(self.path):  # no exclusive create on object stores: write, then read back (acquire)
            self.path.write_bytes(self._contents())
            return
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            raise WorkdirLocked(f"{self.path.parent}: another run took the lock as this one started; use another "
                                "--workdir or wait for it") from None
        with os.fdopen(fd, "wb") as f:
            f.write(self._contents())
