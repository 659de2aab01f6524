"""Replica snapshots on disk: written atomically, verified on load, the previous one kept.

A snapshot is two files in `<dir>/<collection>/`: `<stamp>.faiss` (faiss's own format) and
`<stamp>.json`, the manifest, which names the index file with its size and CRC-32, the
collection generation and seq, and the label → id map. Both are written to temporary names,
fsynced and renamed, the manifest last: a snapshot exists once its manifest does, so a
worker killed mid-write leaves the previous snapshot as the newest usable one. Loading checks
the size and checksum and skips a snapshot that does not match.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import zlib
from pathlib import Path
from typing import Any

from conveyor.vector.replica import Replica, load_faiss

log = logging.getLogger(__name__)
KEEP = 2
_CHUNK = 1 << 22


def _crc32(path: Path) -> int:
    crc = 0
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            crc = zlib.crc32(chunk, crc)
    return crc


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_synced(path: Path, write: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        with tmp.open("rb+") as f:
            os.fsync(f.fileno())
        tmp.rename(path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def collection_dir(root: Path, collection: str) -> Path:
    return root / collection


def write_snapshot(root: Path, collection: str, replica: Replica) -> Path:
    """Write the replica (call with its lock held); returns the manifest's path."""
    folder = collection_dir(root, collection)
    folder.mkdir(parents=True, exist_ok=True)
    stamp = f"{replica.applied:020d}-{time.time_ns()}"
    index_path = folder / f"{stamp}.faiss"
    _write_synced(index_path, lambda tmp: load_faiss().write_index(replica.index, str(tmp)))
    manifest = {
        "collection": collection,
        "generation": replica.generation,
        "seq": replica.applied,
        "dim": replica.dim,
        "metric": replica.metric,
        "kind": replica.kind,
        "built": replica.built,
        "index_file": index_path.name,
        "index_bytes": index_path.stat().st_size,
        "index_crc32": _crc32(index_path),
        "ids": {str(label): item for label, item in replica.ids.items()},
        "retired": sorted(replica.retired),
    }
    manifest_path = folder / f"{stamp}.json"
    _write_synced(manifest_path, lambda tmp: tmp.write_text(json.dumps(manifest)))
    _fsync_dir(folder)
    _prune(folder)
    return manifest_path


def _prune(folder: Path) -> None:
    manifests = sorted(folder.glob("*.json"))
    for old in manifests[:-KEEP]:
        with contextlib.suppress(FileNotFoundError):
            old.with_suffix(".faiss").unlink()
            old.unlink()
    for orphan in folder.glob("*.faiss"):
        if not orphan.with_suffix(".json").exists() and orphan.stat().st_mtime < time.time() - 60:
            with contextlib.suppress(FileNotFoundError):
                orphan.unlink()


def load_snapshot(root: Path, collection: str, generation: str) -> Replica | None:
    """The newest intact snapshot of this generation of the collection, or None."""
    folder = collection_dir(root, collection)
    for manifest_path in sorted(folder.glob("*.json"), reverse=True):
        try:
            manifest = json.loads(manifest_path.read_text())
            if manifest["generation"] != generation:
                continue
            index_path = folder / manifest["index_file"]
            if index_path.stat().st_size != manifest["index_bytes"]:
                raise ValueError("index file size differs from the manifest")
            if _crc32(index_path) != manifest["index_crc32"]:
                raise ValueError("index file checksum differs from the manifest")
            replica = Replica(generation, manifest["dim"], manifest["metric"], manifest["kind"])
            replica.index = load_faiss().read_index(str(index_path))
            replica.built = manifest["built"]
            replica.applied = manifest["seq"]
            replica.ids = {int(label): item for label, item in manifest["ids"].items()}
            replica.labels = {item: label for label, item in replica.ids.items()}
            replica.retired = set(manifest["retired"])
            return replica
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            log.warning("skipping snapshot %s: %s", manifest_path, exc)
    return None
