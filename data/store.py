"""Content-addressed artifact store with manifests, a cache index and lineage.

Layout under the store root (default `./artifacts`, or `R1FLOW_STORE`, or the recipe's `store`):

  objects/<id>/            one immutable artifact: payload files + manifest.json
  index/<cache_key>        the id produced by a stage run with that cache key (a text file)
  work/<cache_key>/        scratch space of an unfinished stage (mid-stage checkpoints)
  tmp/                     artifacts being written; renamed into objects/ when complete
  locks/<cache_key>        flock held while a run computes that stage: a second run waits, then reuses

An artifact's id is the sha256 of its payload (relative paths and file digests), so identical
outputs share one directory whoever wrote them. Writes go to tmp/ and are renamed into place, so
a crash never leaves a partial object. Every read re-hashes the files against the manifest.

Shared storage: a shared filesystem path (NFS, Lustre, a Kubernetes volume) is a root like any other.
An fsspec URL (`s3://bucket/r1flow`, `gs://...`, `memory://...`) makes the store a mirror: stages
still read and write a local cache directory ($R1FLOW_CACHE or ~/.cache/r1flow/<url hash>), because
transformers and vLLM load from local paths; each sealed artifact is uploaded with its manifest last
(the manifest's presence marks a complete remote object) and then its index entry; a cache miss
looks in the remote index and downloads the artifact, re-hashed against its manifest before use.
Mid-stage work directories stay local.
This module knows nothing about stages' contents or about Prefect.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

MANIFEST = "manifest.json"
# What an artifact may hold: formats that load without executing anything. Pickle-capable files
# (.bin, .pt, .pth, .pkl, .ckpt, ...) are refused when an artifact is sealed and when it is read.
SAFE_SUFFIXES = frozenset({".safetensors", ".parquet", ".json", ".jsonl", ".jinja", ".txt", ".md", ".png",
                           ".yaml", ".model", ".log", ".gguf", ".modelfile"})
ArtifactKind = Literal["dataset", "checkpoint", "tokenizer", "report", "export"]


class ArtifactError(RuntimeError):
    """An artifact is missing, incomplete or does not match its manifest."""


class FileEntry(BaseModel):
    path: str = Field(description="Path relative to the artifact directory.")
    sha256: str
    bytes: int


class TableInfo(BaseModel):
    rows: int
    columns: dict[str, str] = Field(description="Column name -> Arrow type.")


class Manifest(BaseModel):
    """What an artifact is, where it came from, and the digest of every file in it."""

    id: str = Field(description="sha256 of the payload (paths and file digests).")
    kind: ArtifactKind
    stage: str
    config: dict[str, Any] = Field(description="The stage config that produced it.")
    config_hash: str
    cache_key: str = Field(description="hash(stage, config, parent ids, code version).")
    parents: list[str] = Field(default_factory=list, description="Ids of the artifacts it was made from.")
    code_version: str
    files: list[FileEntry]
    tables: dict[str, TableInfo] = Field(default_factory=dict, description="Parquet files: rows and schema.")
    summary: dict[str, Any] = Field(default_factory=dict, description="Headline metrics of the stage.")
    created: dt.datetime


class ArtifactRef(BaseModel):
    """What tasks pass between each other: small and serialisable, never the payload."""

    id: str
    path: str
    kind: ArtifactKind
    stage: str
    uri: str | None = Field(None, description="Where the artifact lives for other machines: its remote URL "
                                              "for an fsspec store, else the file URI of `path`.")

    def file(self, name: str) -> Path:
        return Path(self.path) / name


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def stable_hash(obj: Any) -> str:
    """sha256 of a JSON-serialisable object with sorted keys."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _payload_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name != MANIFEST)


def _unsafe(paths: list[str]) -> list[str]:
    return [p for p in paths if Path(p).suffix.lower() not in SAFE_SUFFIXES]


def _table_info(path: Path) -> TableInfo:
    import pyarrow.parquet as pq

    meta = pq.read_metadata(path)
    schema = meta.schema.to_arrow_schema()
    return TableInfo(rows=meta.num_rows, columns={f.name: str(f.type) for f in schema})


class ArtifactStore:
    def __init__(self, root: str | Path):
        root = str(root)
        self.fs = None  # fsspec filesystem of a remote store
        self.remote = ""  # its root path, as that filesystem spells it
        self.url = ""
        if root.startswith("file://"):
            root = root[len("file://"):]
        elif "://" in root:
            import fsspec

            self.url = root.rstrip("/")
            try:
                self.fs, self.remote = fsspec.core.url_to_fs(self.url)
            except (ImportError, ValueError) as e:
                raise ArtifactError(f"store {root!r}: fsspec cannot open it ({e})") from e
            self.remote = self.remote.rstrip("/")
            cache = Path(os.environ.get("R1FLOW_CACHE") or Path.home() / ".cache" / "r1flow")
            root = str(cache / hashlib.sha256(self.url.encode()).hexdigest()[:16])
        self.root = Path(root).resolve()
        for sub in ("objects", "index", "work", "tmp", "locks"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    # ---- writing -------------------------------------------------------------------------
    @contextlib.contextmanager
    def write(self, *, stage: str, kind: ArtifactKind, config: dict, parents: list[str], code_version: str,
              cache_key: str, summary: dict | None = None) -> Iterator[tuple[Path, dict]]:
        """Yield (directory, summary dict) to fill; on a clean exit the artifact is hashed, given its
        manifest and renamed into objects/. On an exception the temporary directory is removed."""
        tmp = self.root / "tmp" / f"{stage}-{uuid.uuid4().hex}"
        tmp.mkdir(parents=True)
        summary = dict(summary or {})
        try:
            yield tmp, summary
            self._seal(tmp, stage=stage, kind=kind, config=config, parents=parents,
                       code_version=code_version, cache_key=cache_key, summary=summary)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    @contextlib.contextmanager
    def lock(self, cache_key: str, on_wait: Any = None) -> Iterator[None]:
        """Hold the stage's lock (one computing run per cache key on this store's machine; the lock
        dies with its process, so a killed run never leaves it held). `on_wait()` is called if another
        run holds it."""
        import fcntl

        with open(self.root / "locks" / cache_key, "w") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if on_wait:
                    on_wait()
                fcntl.flock(f, fcntl.LOCK_EX)
            yield

    def _seal(self, tmp: Path, **fields: Any) -> None:
        files = [FileEntry(path=str(p.relative_to(tmp)), sha256=sha256_file(p), bytes=p.stat().st_size)
                 for p in _payload_files(tmp)]
        if not files:
            raise ArtifactError(f"stage {fields['stage']!r} produced an empty artifact")
        if bad := _unsafe([f.path for f in files]):
            raise ArtifactError(f"stage {fields['stage']!r} wrote files of a type artifacts may not hold "
                                f"(pickle-capable; allowed: {sorted(SAFE_SUFFIXES)}): {bad}")
        art_id = stable_hash([(f.path, f.sha256) for f in files])
        tables = {f.path: _table_info(tmp / f.path) for f in files if f.path.endswith(".parquet")}
        manifest = Manifest(id=art_id, files=files, tables=tables, config_hash=stable_hash(fields["config"]),
                            created=dt.datetime.now(dt.timezone.utc), **fields)
        (tmp / MANIFEST).write_text(manifest.model_dump_json(indent=2))
        dest = self.root / "objects" / art_id
        try:
            os.rename(tmp, dest)  # atomic on one filesystem
        except OSError:
            if not (dest / MANIFEST).exists():  # not a concurrent writer of the same content
                raise
            # Another run sealed identical content first; keep its copy.
        self._set_index(fields["cache_key"], art_id)
        self._push(art_id, fields["cache_key"])

    def _set_index(self, cache_key: str, art_id: str) -> None:
        idx = self.root / "index" / cache_key
        tmp = idx.with_name(f".{cache_key}.{uuid.uuid4().hex}")
        tmp.write_text(art_id)
        os.replace(tmp, idx)

    # ---- the remote mirror (fsspec stores) ---------------------------------------------
    def _push(self, art_id: str, cache_key: str) -> None:
        if self.fs is None:
            return
        src, dst = self.root / "objects" / art_id, f"{self.remote}/objects/{art_id}"
        if not self.fs.exists(f"{dst}/{MANIFEST}"):
            for p in [*_payload_files(src), src / MANIFEST]:  # manifest last: it marks the object complete
                rel = p.relative_to(src).as_posix()
                self.fs.makedirs(f"{dst}/{rel}".rsplit("/", 1)[0], exist_ok=True)
                self.fs.put_file(str(p), f"{dst}/{rel}")
        self.fs.makedirs(f"{self.remote}/index", exist_ok=True)
        self.fs.pipe_file(f"{self.remote}/index/{cache_key}", art_id.encode())

    def _pull(self, art_id: str) -> bool:
        """Download a complete remote object into objects/ (via tmp/); False if the remote has none."""
        if self.fs is None or (self.root / "objects" / art_id / MANIFEST).exists():
            return False
        src = f"{self.remote}/objects/{art_id}"
        if not self.fs.exists(f"{src}/{MANIFEST}"):
            return False
        raw = self.fs.cat_file(f"{src}/{MANIFEST}")
        try:
            m = Manifest.model_validate_json(raw)
        except ValueError as e:
            raise ArtifactError(f"{self.url}/objects/{art_id}/{MANIFEST}: corrupt manifest: {e}") from e
        tmp = self.root / "tmp" / f"pull-{uuid.uuid4().hex}"
        try:
            for f in m.files:
                (tmp / f.path).parent.mkdir(parents=True, exist_ok=True)
                self.fs.get_file(f"{src}/{f.path}", str(tmp / f.path))
            (tmp / MANIFEST).write_bytes(raw)
            try:
                os.rename(tmp, self.root / "objects" / art_id)
            except OSError:
                if not (self.root / "objects" / art_id / MANIFEST).exists():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return True

    def _remote_index(self, cache_key: str) -> str | None:
        if self.fs is None or not self.fs.exists(f"{self.remote}/index/{cache_key}"):
            return None
        return self.fs.cat_file(f"{self.remote}/index/{cache_key}").decode().strip()

    # ---- reading -------------------------------------------------------------------------
    def lookup(self, cache_key: str) -> ArtifactRef | None:
        """The artifact a previous run with this cache key produced, verified; None if none."""
        idx = self.root / "index" / cache_key
        if not idx.exists():
            art_id = self._remote_index(cache_key)
            if art_id is None or not (self._pull(art_id) or (self.root / "objects" / art_id / MANIFEST).exists()):
                return None
            self._set_index(cache_key, art_id)
        art_id = idx.read_text().strip()
        if not (self.root / "objects" / art_id / MANIFEST).exists():
            return None  # index outlived its object (deleted by hand): recompute
        return self.ref(art_id)

    def manifest(self, art_id: str) -> Manifest:
        path = self.root / "objects" / art_id / MANIFEST
        if not path.exists() and len(art_id) == 64:
            self._pull(art_id)
        if not path.exists():
            matches = [p.name for p in (self.root / "objects").glob(f"{art_id}*")] if len(art_id) >= 4 else []
            if len(matches) == 1:
                return self.manifest(matches[0])
            raise ArtifactError(f"artifact {art_id!r} not found in store {self.root}"
                                + (f" (prefix matches {len(matches)} artifacts)" if matches else ""))
        try:
            return Manifest.model_validate_json(path.read_text())
        except ValueError as e:
            raise ArtifactError(f"{path}: corrupt manifest: {e}") from e

    def verify(self, art_id: str) -> Manifest:
        """Re-hash every file of the artifact against its manifest."""
        m = self.manifest(art_id)
        d = self.root / "objects" / m.id
        expected = {f.path: f for f in m.files}
        present = {str(p.relative_to(d)) for p in _payload_files(d)}
        if bad := _unsafe(sorted(present | set(expected))):
            raise ArtifactError(f"artifact {m.id[:12]} ({m.stage}): refusing to read pickle-capable file(s) "
                                f"{[str(d / b) for b in bad]}; artifacts hold only {sorted(SAFE_SUFFIXES)}")
        if missing := sorted(set(expected) - present):
            raise ArtifactError(f"artifact {m.id[:12]} ({m.stage}): missing files {missing}")
        if extra := sorted(present - set(expected)):
            raise ArtifactError(f"artifact {m.id[:12]} ({m.stage}): files not in its manifest {extra}")
        for rel, entry in expected.items():
            p = d / rel
            if p.stat().st_size != entry.bytes or sha256_file(p) != entry.sha256:
                raise ArtifactError(f"artifact {m.id[:12]} ({m.stage}): {p} was changed after it was "
                                    f"written (sha256 does not match manifest.json)")
        return m

    def ref(self, art_id: str) -> ArtifactRef:
        m = self.verify(art_id)
        path = self.root / "objects" / m.id
        uri = f"{self.url}/objects/{m.id}" if self.fs is not None else path.as_uri()
        return ArtifactRef(id=m.id, path=str(path), kind=m.kind, stage=m.stage, uri=uri)

    def list(self) -> list[Manifest]:
        out = []
        for d in (self.root / "objects").iterdir():
            if (d / MANIFEST).exists():
                out.append(self.manifest(d.name))
        return sorted(out, key=lambda m: m.created)

    def work_dir(self, cache_key: str) -> Path:
        d = self.root / "work" / cache_key
        d.mkdir(parents=True, exist_ok=True)
        return d

    def clear_work(self, cache_key: str) -> None:
        shutil.rmtree(self.root / "work" / cache_key, ignore_errors=True)

    # ---- lineage -------------------------------------------------------------------------
    def ancestry(self, art_id: str) -> list[Manifest]:
        """The artifact and all its ancestors, each once, parents before children."""
        seen: dict[str, Manifest] = {}

        def visit(i: str) -> None:
            m = self.manifest(i)
            if m.id in seen:
                return
            for p in m.parents:
                visit(p)
            seen[m.id] = m

        visit(art_id)
        return list(seen.values())
