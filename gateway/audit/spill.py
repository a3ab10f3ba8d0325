"""Spill files: where audit records go when the database is down and memory is full, until replayed.

Records are spilled for one database and replayed into that one: the files of a database are named
`<spill_path>.<db>.…`, where `<db>` (`db-` and 12 hex digits) is a hash of its URL without the
password. After a reload that moves `audit.database_url`, what was spilled for the old database waits
for it (the next writer to that database replays it) instead of landing in the new one.

Each process appends to its own `<spill_path>.<db>.<pid>` (JSON Lines, fsync per chunk), so worker
processes sharing a directory never interleave. To replay, a file is first renamed (atomic) to a
name that says which process is replaying it: `….<pid>.replaying` for its own, and
`….<pid>.adopted.<token>` for a dead process's file it took over. The first number after
`<spill_path>.<db>.` is always the owner, so a replayer that dies leaves files the next process
recognises as orphans. A replay that is cut short is simply run again: records carry a unique uid
and the store ignores the ones it already has. Files of dead processes named without a database
(`<spill_path>.<pid>…`, from before spill files were per database) are adopted by any database.

Everything here blocks (file I/O): the writer calls it through `asyncio.to_thread`.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path
from typing import BinaryIO

from gateway.audit.record import AuditEntry

__all__ = ["SpillFiles", "SpillReader", "database_tag", "pid_alive"]


def database_tag(database_url: str) -> str:
    """The name part that says which database a spill file is for: the same for every process and
    every password of that database. Starts with a letter, so it is never taken for a pid."""
    scheme, sep, rest = database_url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if at:
        rest = credentials.split(":", 1)[0] + "@" + host
    return "db-" + hashlib.sha256(f"{scheme}{sep}{rest}".encode()).hexdigest()[:12]


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
    """The spill files of one process for one database (None: files named without a database): its
    own, and the orphans it may adopt."""

    def __init__(self, spill_path: Path, pid: int | None = None, database: str | None = None) -> None:
        spill_path = Path(spill_path)
        #: Files named without a database, from dead processes: adopted as orphans too.
        self._unnamed = SpillFiles(spill_path, pid) if database is not None else None
        self.base = (
            spill_path.with_name(f"{spill_path.name}.{database_tag(database)}") if database else spill_path
        )
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
        for orphan in self._orphans() + (self._unnamed._orphans() if self._unnamed else []):
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
            or (self._unnamed is not None and any(self._unnamed._orphans()))
        )

    def other_databases(self) -> list[Path]:
        """Spill files waiting for other databases (a reload moved `database_url` while the old one
        was down): they are replayed when a writer for their database runs, not by this one."""
        if self._unnamed is None:
            return []
        prefix = f"{self._unnamed.base.name}.db-"
        try:
            names = os.listdir(self.base.parent)
        except FileNotFoundError:
            return []
        mine = self.base.name + "."
        return sorted(
            self.base.parent / name for name in names if name.startswith(prefix) and not name.startswith(mine)
        )

    def pending_bytes(self) -> int:
        """The size of every file this process would replay for its database (one directory scan)."""
        total = 0
        for _, path in self._files():
            try:
                total += path.stat().st_size
            except FileNotFoundError:  # replayed meanwhile
                continue
        return total

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
