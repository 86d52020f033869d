"""System shared-memory registrations shared by workers through the mirror folder (gpuserve/shm_mirror.py),
two registries in one process standing for two workers: what one registers or unregisters the other
sees at its next request, and a request naming a region reads no folder while nothing changed."""

from __future__ import annotations

import os

import numpy as np
import pytest

from gpuserve import shm_mirror
from gpuserve.errors import RegionExists, RegionNotFound
from gpuserve.shared_memory import SharedMemoryRegistry
from gpuserve.shm_mirror import RegistrationMirror
from gpuserve.types import InferInput, InferRequest


@pytest.fixture
def workers(tmp_path):
    objects, folder = tmp_path / "objects", tmp_path / "mirror"
    objects.mkdir()
    folder.mkdir()
    (objects / "data").write_bytes(np.arange(64, dtype=np.uint8).tobytes())
    (objects / "other").write_bytes(bytes(128))
    return [SharedMemoryRegistry(root=str(objects), mirror=RegistrationMirror(str(folder))) for _ in range(2)]


def _request(region: str) -> InferRequest:
    given = InferInput("IN", [4], "UINT8", parameters={"shared_memory_region": region,
                                                          "shared_memory_byte_size": 4})
    return InferRequest("m", [given])


def _listings(monkeypatch) -> list:
    calls = []
    real = os.listdir

    def counted(path):
        calls.append(path)
        return real(path)

    monkeypatch.setattr(shm_mirror.os, "listdir", counted)
    return calls


def test_a_registration_reaches_the_other_worker_and_so_does_its_end(workers):
    first, second = workers
    first.register("r", "/data", 8, 16)
    assert second.status("r") == first.status("r")
    assert bytes(second.read("r", 0, 4)) == bytes([8, 9, 10, 11])
    first.unregister("r")
    with pytest.raises(RegionNotFound):
        second.status("r")
    second.register("r", "/other", 0, 128)  # the name is free again, and a new registration is mapped anew
    assert first.status("r")[0]["byte_size"] == 128


def test_one_name_is_registered_once_across_workers(workers):
    first, second = workers
    first.register("r", "/data", 0, 64)
    with pytest.raises(RegionExists):
        second.register("r", "/other", 0, 64)


def test_requests_read_no_folder_until_a_registration_changes(workers, monkeypatch):
    first, second = workers
    first.register("r", "/data", 0, 64)
    held = second.hold(_request("r"))  # the first request takes the registration in
    assert [region.name for region in held] == ["r"]
    second.let_go(held)
    listings = _listings(monkeypatch)
    for _ in range(50):
        second.let_go(second.hold(_request("r")))
    assert listings == []
    first.register("s", "/other", 0, 128)  # a change anywhere: the next request lists the folder once
    before = len(listings)
    second.let_go(second.hold(_request("r")))
    held = second.hold(_request("s"))
    assert [region.name for region in held] == ["s"] and len(listings) == before + 1
    second.let_go(held)
    first.unregister("r")
    before = len(listings)
    assert second.hold(_request("r")) == [] and len(listings) == before + 1


def test_the_generation_counts_claims_and_withdrawals(tmp_path):
    mirror, again = RegistrationMirror(str(tmp_path)), RegistrationMirror(str(tmp_path))
    assert mirror.generation() == again.generation() == 0
    mirror.publish("r", "/data", 0, 8)
    with pytest.raises(RegionExists):
        again.publish("r", "/data", 0, 8)  # refused: nothing changed
    assert again.generation() == 1
    again.withdraw(None)
    assert mirror.generation() == 2 and mirror.listing() == {}
