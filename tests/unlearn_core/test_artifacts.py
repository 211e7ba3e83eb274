"""The content-addressed artifact store: keys, atomic writes, corruption handling, concurrency, fsspec roots."""
from __future__ import annotations

import dataclasses
import fractions
import hashlib
import multiprocessing as mp
import os
import queue
import threading
import uuid

import numpy as np
import pytest
import torch

from unlearn_core.artifacts import ArtifactStore, artifact_key, require
from unlearn_core.errors import ArtifactError
from unlearn_core.training import TrainConfig

KIND = "original"


def _obj() -> dict:
    return {
        "state": {"w": torch.arange(12, dtype=torch.float32).reshape(3, 4), "n": torch.tensor(7, dtype=torch.int64),
                  "mask": torch.tensor([True, False]), "h": torch.linspace(0, 1, 5, dtype=torch.bfloat16)},
        "events": {"confidence": torch.rand(10, generator=torch.Generator().manual_seed(0))},
        "seconds": 1.25, "env": {"torch": "x", "device": "cpu"}, "ids": [1, 2, 3], "note": None,
    }


def _assert_same(a, b):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys()
        for k in a:
            _assert_same(a[k], b[k])
    else:
        assert a == b


def _files(folder) -> set[str]:
    return set(os.listdir(folder)) if os.path.isdir(folder) else set()


# ---------------------------------------------------------------------------------------- keys

BASE = dict(data="3f2a9c0d1e2b4a5c", arch="resnet18", width=0.125, recipe=dataclasses.asdict(TrainConfig()),
            seed=0, forget=np.arange(0, 300, 3, dtype=np.int64))


def _key(**changes):
    return artifact_key("retrain", **{**BASE, **changes})


def test_key_is_stable_and_short_hex():
    k = _key()
    assert k == _key() and len(k) == 24 and int(k, 16) >= 0
    assert artifact_key("original", **BASE) != k  # the kind is part of the key


def test_key_ignores_dict_order():
    reordered = dict(reversed(list(BASE.items())))
    reordered["recipe"] = dict(reversed(list(BASE["recipe"].items())))
    assert artifact_key("retrain", **reordered) == _key()
    assert _key(seed=np.int64(0), width=np.float64(0.125)) == _key()  # numpy scalars = Python numbers


@pytest.mark.parametrize("change", [
    {"data": "3f2a9c0d1e2b4a5d"},
    {"arch": "vgg16_bn"},
    {"width": 0.25},
    {"seed": 1},
    {"forget": np.arange(0, 303, 3, dtype=np.int64)},   # one more id
    {"forget": np.arange(0, 297, 3, dtype=np.int64)},   # one fewer id
], ids=["data", "arch", "width", "seed", "forget+1", "forget-1"])
def test_key_changes_with_each_part(change):
    assert _key(**change) != _key()


def test_key_changes_when_one_forget_id_changes():
    ids = BASE["forget"].copy()
    ids[17] += 1  # 51 → 52: same size, same sum of the others
    assert _key(forget=ids) != _key()


@pytest.mark.parametrize("field", [f.name for f in dataclasses.fields(TrainConfig)])
def test_key_changes_with_each_recipe_field(field):
    other = {"epochs": 31, "batch_size": 128, "lr": 0.05, "momentum": 0.8, "weight_decay": 1e-4,
             "schedule": "constant", "augment": False}[field]
    recipe = dataclasses.asdict(dataclasses.replace(TrainConfig(), **{field: other}))
    assert _key(recipe=recipe) != _key()


# ---------------------------------------------------------------------------------------- round trip

def test_round_trip_and_layout(tmp_path):
    store = ArtifactStore(str(tmp_path / "store"))
    assert store.local
    assert store.load(KIND, "abc") is None and not store.exists(KIND, "abc")
    store.save(KIND, "abc", _obj())
    assert store.exists(KIND, "abc")
    assert _files(tmp_path / "store" / KIND) == {"abc.pt", "abc.pt.sha256"}  # no .tmp- leftovers
    blob = (tmp_path / "store" / KIND / "abc.pt").read_bytes()
    assert (tmp_path / "store" / KIND / "abc.pt.sha256").read_text().strip() == hashlib.sha256(blob).hexdigest()
    _assert_same(_obj(), store.load(KIND, "abc"))
    # a second save of the same key replaces it, still leaving only the final names
    store.save(KIND, "abc", {"v": torch.ones(2)})
    _assert_same({"v": torch.ones(2)}, store.load(KIND, "abc"))
    assert _files(tmp_path / "store" / KIND) == {"abc.pt", "abc.pt.sha256"}


def test_payload_without_checksum_is_absent(tmp_path):
    store = ArtifactStore(str(tmp_path))
    store.save(KIND, "k", _obj())
    os.remove(store.path(KIND, "k") + ".sha256")  # a crash between the payload and its commit marker
    assert not store.exists(KIND, "k") and store.load(KIND, "k") is None


def test_get_or_build_builds_once_then_loads(tmp_path):
    store = ArtifactStore(str(tmp_path))
    calls = []

    def build():
        calls.append(1)
        return _obj()

    first, built = store.get_or_build(KIND, "k", build)
    assert built and len(calls) == 1
    _assert_same(_obj(), first)
    second, built = ArtifactStore(str(tmp_path)).get_or_build(KIND, "k", build)
    assert not built and len(calls) == 1
    _assert_same(first, second)


def test_failed_build_saves_nothing(tmp_path):
    store = ArtifactStore(str(tmp_path))

    def boom():
        raise RuntimeError("builder failed")

    with pytest.raises(RuntimeError, match="builder failed"):
        store.get_or_build(KIND, "k", boom)
    assert not any(f.endswith((".pt", ".sha256")) or ".tmp-" in f for f in _files(tmp_path / KIND))
    obj, built = store.get_or_build(KIND, "k", _obj)
    assert built


def test_reader_never_sees_a_partial_file(tmp_path):
    """While a writer keeps re-saving a large artifact, every read of the final path is complete."""
    store = ArtifactStore(str(tmp_path))
    big = {"w": torch.arange(2_000_000, dtype=torch.float32)}  # ~8 MB: writes take many syscalls
    store.save(KIND, "big", big)
    path = store.path(KIND, "big")
    full = open(path, "rb").read()
    errors = []

    def writer():
        try:
            for _ in range(6):
                store.save(KIND, "big", big)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    t = threading.Thread(target=writer)
    t.start()
    reads = 0
    while t.is_alive() or reads == 0:
        with open(path, "rb") as f:
            data = f.read()
        assert len(data) == len(full) and data == full, "read a half-written payload"
        reads += 1
    t.join()
    assert not errors and reads > 0
    assert _files(tmp_path / KIND) == {"big.pt", "big.pt.sha256"}
    _assert_same(big, store.load(KIND, "big"))


def test_require():
    assert require({"a": 1}, "x") == {"a": 1}
    with pytest.raises(ArtifactError, match="original model"):
        require(None, "original model")


# ---------------------------------------------------------------------------------------- corruption

def _truncate(path):
    blob = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(blob[: len(blob) // 2])


def _flip_byte(path):
    blob = bytearray(open(path, "rb").read())
    blob[len(blob) // 2] ^= 0x01
    with open(path, "wb") as f:
        f.write(bytes(blob))


@pytest.mark.parametrize("damage", [_truncate, _flip_byte], ids=["truncated", "one-byte-flipped"])
def test_corrupt_payload_detected_removed_and_rebuilt(tmp_path, damage):
    store = ArtifactStore(str(tmp_path))
    store.save(KIND, "k", _obj())
    path = store.path(KIND, "k")
    damage(path)
    with pytest.warns(UserWarning, match="corrupt"):
        assert store.load(KIND, "k") is None
    assert not os.path.exists(path) and not os.path.exists(path + ".sha256")
    # and get_or_build rebuilds it
    store.save(KIND, "k", _obj())
    damage(path)
    calls = []
    with pytest.warns(UserWarning, match="corrupt"):
        got, built = store.get_or_build(KIND, "k", lambda: calls.append(1) or {"fresh": torch.zeros(3)})
    assert built and calls == [1]
    _assert_same({"fresh": torch.zeros(3)}, got)
    _assert_same({"fresh": torch.zeros(3)}, store.load(KIND, "k"))


def test_payload_that_needs_full_unpickling_is_treated_as_corrupt(tmp_path):
    store = ArtifactStore(str(tmp_path))
    store.save(KIND, "k", {"x": fractions.Fraction(1, 3)})  # valid checksum, but not weights_only-loadable
    with pytest.warns(UserWarning, match="corrupt"):
        assert store.load(KIND, "k") is None
    assert not store.exists(KIND, "k")
    got, built = store.get_or_build(KIND, "k", _obj)
    assert built
    _assert_same(_obj(), store.load(KIND, "k"))


# ---------------------------------------------------------------------------------------- concurrency

# Runs in a spawned process (`exec` of this source): no dependence on this test module being importable.
_WORKER = """
import os, time
import torch
from unlearn_core.artifacts import ArtifactStore

def build():
    with open(marker, "a") as f:
        f.write(f"{os.getpid()}\\n")
    time.sleep(0.5)
    return {"builder": torch.tensor(os.getpid()), "w": torch.arange(1000, dtype=torch.float32) * 0.5}

store = ArtifactStore(root)
barrier.wait(timeout=120)  # every process is up and imported: ask at the same moment
art, built = store.get_or_build("original", key, build)
results.put((os.getpid(), bool(built), int(art["builder"]), float(art["w"].sum())))
"""


def test_concurrent_writers_build_once(tmp_path):
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(4), ctx.Queue()
    marker = tmp_path / "builds.txt"
    env = {"root": str(tmp_path / "store"), "key": "shared", "marker": str(marker), "barrier": barrier,
           "results": results}
    procs = [ctx.Process(target=exec, args=(_WORKER, dict(env))) for _ in range(4)]
    for p in procs:
        p.start()
    got = []
    try:
        while len(got) < len(procs):
            try:
                got.append(results.get(timeout=2))
            except queue.Empty:
                assert all(p.is_alive() or p.exitcode == 0 for p in procs), \
                    f"a worker died: exit codes {[p.exitcode for p in procs]}"
    finally:
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.kill()
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    builders = marker.read_text().split()
    assert len(builders) == 1, f"built {len(builders)} times: {builders}"
    assert sum(b for _, b, _, _ in got) == 1
    assert {who for _, _, who, _ in got} == {int(builders[0])}  # all four got the one build
    assert {s for _, _, _, s in got} == {float(np.arange(1000).sum() * 0.5)}
    assert {pid for pid, _, _, _ in got} == {p.pid for p in procs}
    assert ArtifactStore(env["root"]).load("original", "shared")["builder"].item() == int(builders[0])


# ---------------------------------------------------------------------------------------- fsspec

@pytest.fixture
def memory_store():
    root = f"memory://artifacts-test-{uuid.uuid4().hex}"
    store = ArtifactStore(root)
    yield store
    if store.fs.exists(store._base):
        store.fs.rm(store._base, recursive=True)


def test_memory_root_round_trip(memory_store):
    store = memory_store
    assert not store.local
    obj, built = store.get_or_build(KIND, "m", _obj)
    assert built
    assert store.exists(KIND, "m")
    names = {p.rsplit("/", 1)[-1] for p in store.fs.find(store._base)}
    assert names == {"m.pt", "m.pt.sha256"}  # temp file moved into place, nothing else left
    _assert_same(_obj(), store.load(KIND, "m"))
    again, built = ArtifactStore(store.root).get_or_build(KIND, "m", lambda: pytest.fail("rebuilt"))
    assert not built
    _assert_same(obj, again)


def test_memory_root_detects_corruption(memory_store):
    store = memory_store
    store.save(KIND, "m", _obj())
    path = store.path(KIND, "m")
    with store.fs.open(path, "rb") as f:
        blob = f.read()
    with store.fs.open(path, "wb") as f:
        f.write(blob[:-10])
    with pytest.warns(UserWarning, match="corrupt"):
        assert store.load(KIND, "m") is None
    assert not store.fs.exists(path)
