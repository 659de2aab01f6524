"""A worker's in-memory faiss replica of one collection, kept in step with PostgreSQL.

Labels are the rows' seqs, so a row rewritten by an upsert or a delete gets a new label and
the old one is retired: removed at once from a flat index, and for HNSW and IVF (which cannot
remove cheaply) hidden by an IDSelector until the index is rebuilt, which happens once
retired labels reach a fifth of it. An IVF index (sqrt(n) lists) is also retrained once the
collection doubles past the size its lists suit. faiss is imported here and only here, after
any fork.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from conveyor.vector.embedders import Vectors
from conveyor.vector.store import Change

AUTO_HNSW_FROM = 20_000
"""`auto` collections use an exact (flat) index below this many vectors, HNSW from it."""
EXACT_BELOW = 4096
"""A filter matching fewer items than this is answered by exact search over just those."""
IVF_MIN_TRAIN = 1024
"""An `ivf` collection stays exact until it has this many vectors to train on."""
IVF_REGROW = 2
"""An IVF index of nlist lists is retrained once it holds IVF_REGROW * nlist**2 vectors."""
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80


def default_ef_search(k: int) -> int:
    """HNSW search breadth when a search names none: max(192, 8k)."""
    return max(192, 8 * k)


def ivf_lists(count: int) -> int:
    """The lists (nlist) of an IVF index built over `count` vectors: sqrt(count)."""
    return max(1, int(np.sqrt(count)))


def default_nprobe(nlist: int, k: int) -> int:
    """IVF lists searched when a search names none: nlist/2 + sqrt(nlist * max(k, 10))/4,
    rounded up, at most nlist. Chosen with benchmarks/ivf_recall.py: recall@10 >= 0.95
    against exact search on `hashing` embeddings of docstrings, from 1024 to 100k vectors."""
    return min(nlist, math.ceil(nlist / 2 + math.sqrt(nlist * max(k, 10)) / 4))


COMPACT_RATIO = 0.2


OMP_WAIT_POLICY = "PASSIVE"
"""OpenMP threads sleep between faiss calls instead of spinning (libgomp spins by default):
a spinning thread takes a core from the worker, Redis and PostgreSQL, which doubled a
single search's round trip on a 2-core machine. Read by libgomp when faiss first loads."""


def load_faiss() -> Any:
    """The faiss module, imported on first use (in a worker: after the fork), with OpenMP's
    wait policy set unless the environment already chose one."""
    os.environ.setdefault("OMP_WAIT_POLICY", OMP_WAIT_POLICY)
    import faiss

    return faiss


@dataclass(frozen=True)
class Hits:
    """The best matches of each query, one row per query: labels (-1 where fewer matched)
    and scores (higher is better for every metric), as arrays so that large batches are
    turned into results without a Python loop per hit."""

    labels: npt.NDArray[np.int64]
    scores: npt.NDArray[np.float32]

    @property
    def complete(self) -> bool:
        """Every row holds only real matches."""
        return bool((self.labels >= 0).all())

    def score_lists(self) -> list[list[float]]:
        """Scores per query, each rounded to 9 significant digits: enough to read back as
        the very float32 faiss computed (FLT_DECIMAL_DIG), and about 11 characters of JSON
        where the float32's exact float64 value takes 18."""
        exact = self.scores.astype(np.float64)
        nonzero = exact != 0
        magnitude = np.floor(np.log10(np.abs(exact), where=nonzero, out=np.zeros_like(exact)))
        scale = 10.0 ** (8 - magnitude)
        rounded: list[list[float]] = np.where(
            nonzero, np.round(exact * scale) / scale, 0.0
        ).tolist()
        return rounded

    def rows(self) -> list[list[tuple[int, float]]]:
        """(label, score) pairs per query, without the missing ones."""
        return [
            [(label, score) for label, score in zip(labels, scores, strict=True) if label >= 0]
            for labels, scores in zip(self.labels.tolist(), self.scores.tolist(), strict=True)
        ]


class Replica:
    """The vectors of one collection at one generation, up to `applied` seq."""

    def __init__(self, generation: str, dim: int, metric: str, kind: str) -> None:
        self.generation, self.dim, self.metric, self.kind = generation, dim, metric, kind
        self.applied = 0
        self.lock = threading.Lock()
        self.labels: dict[str, int] = {}
        self.ids: dict[int, str] = {}
        self.retired: set[int] = set()
        self.built = "flat"
        self.index: Any = self._new_index("flat", 0)

    @property
    def size(self) -> int:
        return len(self.labels)

    def _wanted_kind(self, count: int) -> str:
        if self.kind == "auto":
            return "hnsw" if count >= AUTO_HNSW_FROM else "flat"
        if self.kind == "ivf" and count < IVF_MIN_TRAIN:
            return "flat"
        return self.kind

    def _faiss_metric(self) -> int:
        faiss = load_faiss()
        return int(faiss.METRIC_L2 if self.metric == "l2" else faiss.METRIC_INNER_PRODUCT)

    def _new_index(self, kind: str, count: int, train: Vectors | None = None) -> Any:
        faiss = load_faiss()
        metric = self._faiss_metric()
        if kind == "hnsw":
            inner = faiss.IndexHNSWFlat(self.dim, HNSW_M, metric)
            inner.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        elif kind == "ivf":
            nlist = ivf_lists(count)
            quantizer = faiss.IndexFlat(self.dim, metric)
            inner = faiss.IndexIVFFlat(quantizer, self.dim, nlist, metric)
            inner.train(train)
            inner.nprobe = default_nprobe(nlist, 10)
            inner.make_direct_map()
        else:
            inner = faiss.IndexFlat(self.dim, metric)
        return faiss.IndexIDMap2(inner)

    def _prepare(self, vectors: Vectors) -> Vectors:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if self.metric == "cosine":
            vectors = vectors.copy()
            load_faiss().normalize_L2(vectors)
        return vectors

    def apply(self, changes: Sequence[Change]) -> None:
        """Apply rows newer than `applied`, in seq order."""
        fresh_labels: list[int] = []
        fresh: list[bytes] = []
        gone: list[int] = []
        for change in changes:
            old = self.labels.pop(change.id, None)
            if old is not None:
                gone.append(old)
                self.ids.pop(old, None)
            if change.vector is not None:
                self.labels[change.id] = change.seq
                self.ids[change.seq] = change.id
                fresh_labels.append(change.seq)
                fresh.append(change.vector)
            self.applied = max(self.applied, change.seq)
        self._retire(gone)
        vectors = np.frombuffer(b"".join(fresh), dtype="<f4").reshape(len(fresh), self.dim)
        vectors, labels = self._prepare(vectors), np.asarray(fresh_labels, np.int64)
        crowded = len(self.retired) > COMPACT_RATIO * max(1, self.index.ntotal)
        if self._wanted_kind(self.size) != self.built or crowded or self._outgrown():
            self.rebuild(vectors, labels)
        elif fresh:
            self.index.add_with_ids(vectors, labels)

    def _outgrown(self) -> bool:
        """An IVF index holding IVF_REGROW times the vectors its lists were sized for."""
        if self.built != "ivf":
            return False
        nlist = int(load_faiss().extract_index_ivf(self.index.index).nlist)
        return self.size >= IVF_REGROW * nlist * nlist

    def _retire(self, labels: list[int]) -> None:
        if not labels:
            return
        if self.built == "flat":
            self.index.remove_ids(np.asarray(labels, dtype=np.int64))
        else:
            self.retired.update(labels)

    def live_vectors(self, labels: Sequence[int]) -> Vectors:
        """The stored (prepared) vectors of these labels."""
        if not labels:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.vstack([self.index.reconstruct(int(label)) for label in labels])

    def _all_live(self) -> tuple[Vectors, npt.NDArray[np.int64]]:
        """Every live vector and its label, read from the index in one pass."""
        faiss = load_faiss()
        inner = faiss.downcast_index(self.index.index)
        if inner.ntotal == 0:
            return np.zeros((0, self.dim), dtype=np.float32), np.zeros(0, dtype=np.int64)
        vectors = inner.reconstruct_n(0, inner.ntotal)
        labels = faiss.vector_to_array(self.index.id_map).astype(np.int64)
        keep = np.fromiter((int(label) in self.ids for label in labels), bool, len(labels))
        return vectors[keep], labels[keep]

    def rebuild(
        self,
        extra: Vectors | None = None,
        extra_labels: npt.NDArray[np.int64] | None = None,
    ) -> None:
        """A fresh index of the live vectors (plus `extra`), of the kind their number needs."""
        vectors, labels = self._all_live()
        if extra is not None and extra_labels is not None and len(extra_labels):
            vectors = np.vstack([vectors, extra])
            labels = np.concatenate([labels, extra_labels])
        kind = self._wanted_kind(len(labels))
        index = self._new_index(kind, len(labels), vectors if kind == "ivf" else None)
        if len(labels):
            index.add_with_ids(np.ascontiguousarray(vectors), labels)
        self.index, self.built, self.retired = index, kind, set()

    def search(
        self,
        queries: Vectors,
        k: int,
        allowed: Sequence[int] | None = None,
        ef_search: int | None = None,
        nprobe: int | None = None,
    ) -> Hits:
        """The k best matches per query among the live vectors (or the `allowed` labels);
        `ef_search` (HNSW) and `nprobe` (IVF, at most all lists) widen or narrow the search."""
        queries = self._prepare(queries)
        if allowed is not None:
            present = [label for label in allowed if label in self.ids]
            if self.built == "flat" or len(present) < EXACT_BELOW:
                return self._exact(queries, k, present)
            found = self._indexed(queries, k, present, ef_search, nprobe)
            if (found.labels[:, : min(k, len(present))] >= 0).all():
                return found
            return self._exact(queries, k, present)
        return self._indexed(queries, k, None, ef_search, nprobe)

    def _indexed(
        self,
        queries: Vectors,
        k: int,
        allowed: Sequence[int] | None,
        ef_search: int | None,
        nprobe: int | None,
    ) -> Hits:
        faiss = load_faiss()
        selector = None
        if allowed is not None:
            selector = faiss.IDSelectorBatch(np.asarray(allowed, dtype=np.int64))
        elif self.retired:
            retired = faiss.IDSelectorBatch(np.asarray(sorted(self.retired), dtype=np.int64))
            selector = faiss.IDSelectorNot(retired)
        if self.built == "hnsw":
            ef = max(k, ef_search or default_ef_search(k))
            params = faiss.SearchParametersHNSW(sel=selector, efSearch=ef)
        elif self.built == "ivf":
            nlist = faiss.extract_index_ivf(self.index.index).nlist
            probe = min(nlist, nprobe or default_nprobe(nlist, k))
            params = faiss.SearchParametersIVF(sel=selector, nprobe=probe)
        else:
            params = faiss.SearchParameters(sel=selector)
        distances, labels = self.index.search(queries, k, params=params)
        return Hits(labels, -distances if self.metric == "l2" else distances)

    def _exact(self, queries: Vectors, k: int, labels: Sequence[int]) -> Hits:
        if not labels:
            empty = np.zeros((len(queries), 0))
            return Hits(empty.astype(np.int64), empty.astype(np.float32))
        vectors = self.live_vectors(labels)
        if self.metric == "l2":
            scores = -(
                (queries**2).sum(1)[:, None] - 2 * queries @ vectors.T + (vectors**2).sum(1)[None]
            )
        else:
            scores = queries @ vectors.T
        top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        label_array = np.asarray(labels, dtype=np.int64)
        return Hits(label_array[top], np.take_along_axis(scores, top, axis=1).astype(np.float32))


def set_faiss_threads(count: int) -> None:
    """Give faiss (OpenMP) this many threads in this process."""
    load_faiss().omp_set_num_threads(max(1, count))
