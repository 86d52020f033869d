"""System shared-memory registrations shared by the processes of `gpuserve start --workers N`.

Each worker keeps its own registry, and the kernel hands each connection to one of them, so a client that
registers a region over one connection and infers over another could reach a worker that never saw it
(perf_analyzer registers once and infers from a client per context). The parent makes a folder; a
registration is one record file in it, `<name as hex>.<nonce>`, holding the key, offset and size; every
worker reads the folder before it uses, lists or changes regions and maps what it has not seen (by the
nonce, so a name unregistered and registered again is mapped anew). Claims and withdrawals take an
exclusive flock on the folder's lock file, so two workers never both register one name, and then count
one more change in the folder's generation file, which every worker maps: a worker reads that counter
(memory, no system call) on each request that names a region and lists the folder only when it moved, so
serving from shared memory costs no file-system call once the registrations have settled. CUDA regions are
not files: the worker that registers one tells the others, and each opens the client's handle itself
(server/peers.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import mmap
import os
import struct
import uuid
from typing import Dict, Iterator, Optional, Tuple

from gpuserve.errors import RegionExists

ENV = "GPUSERVE_SHM_MIRROR"  # the folder, set by server/workers.py for each worker
_GENERATION = struct.Struct("<Q")  # the changes made so far, one aligned word (read whole by one load)


class RegistrationMirror:
    def __init__(self, folder: str):
        self.folder = folder
        self._lock_path = os.path.join(folder, ".lock")
        fd = os.open(os.path.join(folder, ".generation"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            if os.fstat(fd).st_size < _GENERATION.size:  # the first worker here sizes it; zeros are generation 0
                os.ftruncate(fd, _GENERATION.size)
            self._generation = mmap.mmap(fd, _GENERATION.size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)

    @classmethod
    def from_environment(cls) -> Optional["RegistrationMirror"]:
        folder = os.environ.get(ENV)
        return cls(folder) if folder and os.path.isdir(folder) else None

    @contextlib.contextmanager
    def _claimed(self) -> Iterator[None]:
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing drops the lock

    def generation(self) -> int:
        """How many claims and withdrawals the folder has seen: a worker relists it only when this moved."""
        return _GENERATION.unpack_from(self._generation)[0]

    def _changed(self) -> None:
        """Count one change; the caller holds the claim, and has changed the folder already."""
        _GENERATION.pack_into(self._generation, 0, self.generation() + 1)

    def listing(self) -> Dict[str, str]:
        """Registered name -> its record file."""
        found = {}
        for entry in os.listdir(self.folder):
            if entry.startswith("."):
                continue
            hexname, _, _nonce = entry.partition(".")
            try:
                found[bytes.fromhex(hexname).decode("utf-8")] = entry
            except ValueError:
                continue
        return found

    def read(self, record: str) -> Optional[Tuple[str, int, int]]:
        """(key, offset, byte_size) of a record; None if it went meanwhile."""
        try:
            with open(os.path.join(self.folder, record), encoding="utf-8") as file:
                entry = json.load(file)
        except (OSError, ValueError):
            return None
        return entry["key"], int(entry["offset"]), int(entry["byte_size"])

    def publish(self, name: str, key: str, offset: int, byte_size: int) -> str:
        """Record a registration; RegionExists if another worker holds the name."""
        record = f"{name.encode('utf-8').hex()}.{uuid.uuid4().hex}"
        staging = os.path.join(self.folder, "." + record)
        with open(staging, "w", encoding="utf-8") as file:
            json.dump({"key": key, "offset": offset, "byte_size": byte_size}, file)
        try:
            with self._claimed():
                if name in self.listing():
                    raise RegionExists(f"shared memory region '{name}' already in manager")
                os.rename(staging, os.path.join(self.folder, record))
                self._changed()
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(staging)
        return record

    def withdraw(self, name: Optional[str]) -> None:
        """Forget `name`'s record, or every record."""
        with self._claimed():
            for found, record in self.listing().items():
                if name is None or found == name:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(os.path.join(self.folder, record))
            self._changed()
