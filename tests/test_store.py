"""Artifact store: content addressing, atomic writes, verification, concurrency.   pytest tests/test_store.py"""

from __future__ import annotations

import json
import threading

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from r1flow.data.schemas import read_rows
from r1flow.data.store import MANIFEST, ArtifactError, ArtifactStore


def _write(store, payload: str, key="k1", parents=()):
    with store.write(stage="s", kind="dataset", config={"a": 1}, parents=list(parents), code_version="v",
                     cache_key=key) as (d, summary):
        pq.write_table(pa.table({"text": [payload, payload + "!"]}), d / "t.parquet")
        (d / "sub").mkdir()
        (d / "sub" / "x.json").write_text(json.dumps({"p": payload}))
        summary["n"] = 2
    return store.lookup(key)


def test_write_lookup_and_manifest(tmp_path):
    store = ArtifactStore(tmp_path)
    ref = _write(store, "hello")
    m = store.verify(ref.id)
    assert m.stage == "s" and m.kind == "dataset" and m.config == {"a": 1} and m.cache_key == "k1"
    assert m.tables["t.parquet"].rows == 2 and m.tables["t.parquet"].columns == {"text": "string"}
    assert {f.path for f in m.files} == {"t.parquet", "sub/x.json"} and m.summary["n"] == 2
    assert read_rows(ref.file("t.parquet"), "corpus", ["text"])[0]["text"] == "hello"
    assert list((tmp_path / "tmp").iterdir()) == []
    # Same content under another key: same id, one object.
    ref2 = _write(store, "hello", key="k2")
    assert ref2.id == ref.id and len(list((tmp_path / "objects").iterdir())) == 1
    assert _write(store, "other", key="k3").id != ref.id


def test_changed_file_is_reported_on_read(tmp_path):
    store = ArtifactStore(tmp_path)
    ref = _write(store, "hello")
    (ref.file("sub") / "x.json").write_text('{"p": "tampered"}')
    with pytest.raises(ArtifactError, match="changed after it was written"):
        store.lookup("k1")
    with pytest.raises(ArtifactError, match="changed after it was written"):
        store.verify(ref.id)


def test_missing_and_extra_files_are_reported(tmp_path):
    store = ArtifactStore(tmp_path)
    ref = _write(store, "hello")
    (ref.file("sub") / "x.json").unlink()
    with pytest.raises(ArtifactError, match="missing files"):
        store.verify(ref.id)
    ref = _write(store, "again", key="k9")
    ref.file("planted.txt").write_bytes(b"x")
    with pytest.raises(ArtifactError, match="not in its manifest"):
        store.verify(ref.id)


def test_crash_during_write_leaves_no_artifact(tmp_path):
    store = ArtifactStore(tmp_path)
    with pytest.raises(RuntimeError, match="boom"):
        with store.write(stage="s", kind="dataset", config={}, parents=[], code_version="v", cache_key="k") as (d, _):
            (d / "half.parquet").write_bytes(b"PAR1 partial")
            raise RuntimeError("boom")
    assert list((tmp_path / "objects").iterdir()) == []
    assert list((tmp_path / "tmp").iterdir()) == []
    assert store.lookup("k") is None


def test_unknown_artifact_and_corrupt_parquet(tmp_path):
    store = ArtifactStore(tmp_path)
    with pytest.raises(ArtifactError, match="not found"):
        store.manifest("deadbeef")
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 not really parquet")
    with pytest.raises(ArtifactError, match="bad.parquet: not a readable Parquet"):
        read_rows(bad, "corpus")
    pq.write_table(pa.table({"other": [1]}), tmp_path / "cols.parquet")
    with pytest.raises(ArtifactError, match=r"missing required corpus columns \['text'"):
        read_rows(tmp_path / "cols.parquet", "corpus")


def test_concurrent_writers_of_the_same_artifact(tmp_path):
    store = ArtifactStore(tmp_path)
    refs, errors = [], []

    def go(i):
        try:
            refs.append(_write(ArtifactStore(tmp_path), "same", key=f"k{i}"))
        except Exception as e:  # noqa: BLE001 - collected and asserted below
            errors.append(e)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len({r.id for r in refs}) == 1
    store.verify(refs[0].id)
    assert list((tmp_path / "tmp").iterdir()) == []


def test_ancestry_orders_parents_first(tmp_path):
    store = ArtifactStore(tmp_path)
    a = _write(store, "a", key="ka")
    b = _write(store, "b", key="kb", parents=[a.id])
    c = _write(store, "c", key="kc", parents=[a.id, b.id])
    assert [m.id for m in store.ancestry(c.id)] == [a.id, b.id, c.id]
    assert (tmp_path / "objects" / c.id / MANIFEST).exists()


def test_fsspec_store_mirrors_artifacts_between_machines(tmp_path, monkeypatch):
    """Two machines (two local caches) share one fsspec store: what one seals, the other finds by
    cache key and by id, re-hashed; a remote file changed after upload is refused."""
    import fsspec

    url = f"memory://r1flow-test-{tmp_path.name}"
    monkeypatch.setenv("R1FLOW_CACHE", str(tmp_path / "cache-a"))
    a = ArtifactStore(url)
    with a.write(stage="world", kind="dataset", config={"n": 1}, parents=[], code_version="c", cache_key="k1") as (d, _):
        (d / "sub").mkdir()
        (d / "sub" / "x.txt").write_text("payload")
    ref_a = a.lookup("k1")
    assert ref_a.uri == f"{url}/objects/{ref_a.id}"

    monkeypatch.setenv("R1FLOW_CACHE", str(tmp_path / "cache-b"))
    b = ArtifactStore(url)
    assert b.root != a.root and not any((b.root / "objects").iterdir())
    ref_b = b.lookup("k1")
    assert ref_b is not None and ref_b.id == ref_a.id and (ref_b.file("sub/x.txt")).read_text() == "payload"
    assert b.lookup("missing") is None

    fs, path = fsspec.core.url_to_fs(url)
    fs.pipe_file(f"{path}/objects/{ref_a.id}/sub/x.txt", b"tampered")
    monkeypatch.setenv("R1FLOW_CACHE", str(tmp_path / "cache-c"))
    c = ArtifactStore(url)
    with pytest.raises(ArtifactError, match="changed after it was written"):
        c.ref(ref_a.id)
