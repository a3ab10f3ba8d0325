"""Spill files: where audit records go when the database is down and memory is full, until replayed.

Each process appends to its own `<spill_path>.<pid>` (JSON Lines, fsync per chunk), so worker
processes sharing a directory never interleave. To replay, a file is first renamed (atomic) to a
name that says which process is replaying it: `<spill_path>.<pid>.replaying` for its own, and
`<spill_path>.<pid>.adopted.<token>` for a dead process's file it took over. The first number
after `<spill_path>.` is always the owner, so a replayer that dies leaves files the next process
recognises as orphans. A replay that is cut short is simply run again: records carry a unique uid
and the store ignores the ones it already has.

Everything here blocks (file I/O): the writer calls it through `asyncio.to_thread`.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import BinaryIO

from gateway.audit.record import AuditEntry

__all__ = ["SpillFiles", "SpillReader", "pid_alive"]


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (on this host)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class SpillFiles:
    """The spill files of one process: its own, and the orphans it may adopt."""

    def __init__(self, spill_path: Path, pid: int | None = None) -> None:
        self.base = Path(spill_path)
        self.pid = os.getpid() if pid is None else pid
        self.path = self.base.with_name(f"{self.base.name}.{self.pid}")
        self._replaying = self.base.with_name(f"{self.base.name}.{self.pid}.replaying")

    def append(self, lines: list[bytes]) -> None:
        """Append these lines and fsync. Raises OSError (disk full, no directory…)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            data = memoryview(b"".join(lines))
            while data:
                written = os.write(fd, data)
                data = data[written:]
            os.fsync(fd)
        finally:
            os.close(fd)

    def claim_next(self) -> Path | None:
        """The next file for this process to replay, already renamed to a name it owns; None if none.

        In order: a replay of its own that was interrupted, an orphan it adopted earlier, its own
        spill file, then the spill files of processes that no longer exist.
        """
        if self._replaying.exists():
            return self._replaying
        owned = sorted(self._owned_adoptions())
        if owned:
            return owned[0]
        try:
            os.rename(self.path, self._replaying)
            return self._replaying
        except FileNotFoundError:
            pass
        for orphan in self._orphans():
            adopted = self.base.with_name(f"{self.base.name}.{self.pid}.adopted.{uuid.uuid4().hex[:12]}")
            try:
                os.rename(orphan, adopted)  # atomic: when two processes race, one gets it
            except FileNotFoundError:
                continue
            return adopted
        return None

    def pending(self) -> bool:
        """Whether anything is waiting to be replayed by this process (cheap: one directory scan)."""
        return (
            self.path.exists()
            or self._replaying.exists()
            or any(self._owned_adoptions())
            or any(self._orphans())
        )

    def _files(self) -> list[tuple[int, Path]]:
        """(owner pid, path) of every spill file next to `spill_path`."""
        prefix = self.base.name + "."
        try:
            names = os.listdir(self.base.parent)
        except FileNotFoundError:
            return []
        found = []
        for name in names:
            if not name.startswith(prefix):
                continue
            owner = name[len(prefix) :].split(".", 1)[0]
            if owner.isdigit():
                found.append((int(owner), self.base.parent / name))
        return found

    def _owned_adoptions(self) -> list[Path]:
        marker = f"{self.base.name}.{self.pid}.adopted."
        return [path for owner, path in self._files() if owner == self.pid and path.name.startswith(marker)]

    def _orphans(self) -> list[Path]:
        return sorted(path for owner, path in self._files() if owner != self.pid and not pid_alive(owner))


class SpillReader:
    """Reads a claimed spill file in chunks; `finish()` deletes it once every chunk is stored."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: BinaryIO | None = open(path, "rb")  # noqa: SIM115 (held across chunks)

    def read(self, count: int) -> tuple[list[AuditEntry], int]:
        """Up to `count` entries and how many lines were unreadable (a line cut short by a crash)."""
        entries: list[AuditEntry] = []
        bad = 0
        if self._file is None:
            return entries, bad
        while len(entries) < count:
            line = self._file.readline()
            if not line:
                break
            if not line.strip():
                continue
            try:
                entries.append(AuditEntry.from_line(line))
            except (ValueError, TypeError):
                bad += 1
        return entries, bad

    def finish(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
