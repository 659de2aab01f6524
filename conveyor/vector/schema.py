"""The vector service's pydantic models: requests, results and limits."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

import numpy as np
import numpy.typing as npt
import pybase64
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from conveyor.blobs import KEY_PATTERN
from conveyor.filters import Where
from conveyor.models.jsonb import reject_nul

MAX_K = 1000
MAX_EF_SEARCH = 4096
MAX_NPROBE = 4096
"""nprobe above a collection's lists (sqrt of its size when built) searches all of them."""
MAX_BATCH = 10_000
MAX_QUERIES = 1000
MAX_MATRIX_B64 = 4 * (MAX_QUERIES * 4096 * 4) // 3 + 4
"""A query matrix holds up to MAX_QUERIES rows of up to 4096 float32 values."""

Include = Literal["metadata", "text", "vector"]
DEFAULT_INCLUDE: list[Include] = ["metadata", "text"]


CollectionName = Annotated[
    str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")
]
ItemId = Annotated[str, Field(min_length=1, max_length=500), AfterValidator(reject_nul)]


def _finite(vector: list[float]) -> list[float]:
    for i, value in enumerate(vector):
        if not math.isfinite(value):
            raise ValueError(f"value {i} is {value}; vectors must be finite (no NaN or infinity)")
    return vector


Vector = Annotated[list[float], Field(min_length=1, max_length=65536), AfterValidator(_finite)]


def decode_vector(value: str) -> npt.NDArray[np.float32]:
    """A base64 string of little-endian float32 values as an array."""
    return np.frombuffer(pybase64.b64decode(value, validate=True), dtype="<f4").astype(np.float32)


def encode_vector(values: Any) -> str:
    """The base64 form of a vector (any sequence of numbers)."""
    return pybase64.b64encode_as_string(np.asarray(values, dtype="<f4").tobytes())


class DecodedB64(str):
    """A validated base64 vector string that keeps the array it decodes to."""

    array: npt.NDArray[np.float32]


def check_finite(array: npt.NDArray[np.float32]) -> None:
    """ValueError naming the first NaN or infinite value, if there is one."""
    if not np.isfinite(array).all():
        bad = np.flatnonzero(~np.isfinite(array))
        raise ValueError(
            f"value {bad[0]} is {array.flat[bad[0]]}; vectors must be finite (no NaN or infinity)"
        )


def float32s(raw: bytes) -> npt.NDArray[np.float32]:
    """Little-endian float32 values from bytes; ValueError unless whole and finite."""
    if not raw or len(raw) % 4:
        raise ValueError(f"decodes to {len(raw)} bytes, not a whole number of float32 values")
    array = np.frombuffer(raw, dtype="<f4")
    check_finite(array)
    return array.astype(np.float32)


def matrix_rows(flat: npt.NDArray[np.float32], dim: int) -> npt.NDArray[np.float32]:
    """Flat values as rows of `dim`; ValueError unless whole rows, at most MAX_QUERIES."""
    if flat.size % dim:
        raise ValueError(f"holds {flat.size} values, not whole rows of dim {dim}")
    if flat.size // dim > MAX_QUERIES:
        raise ValueError(f"holds {flat.size // dim} rows; at most {MAX_QUERIES}")
    return flat.reshape(-1, dim)


def _b64_vector(value: str) -> str:
    try:
        raw = pybase64.b64decode(value, validate=True)
    except ValueError:
        raise ValueError("is not valid base64") from None
    decoded = DecodedB64(value)
    decoded.array = float32s(raw)
    return decoded


VectorB64 = Annotated[str, Field(max_length=350_000), AfterValidator(_b64_vector)]
"""A vector as base64 of little-endian float32: far smaller and faster than a JSON list."""


class _HasVector(BaseModel):
    vector: Vector | None = None
    vector_b64: VectorB64 | None = None

    def array(self) -> npt.NDArray[np.float32] | None:
        if isinstance(self.vector_b64, DecodedB64):
            return self.vector_b64.array
        if self.vector_b64 is not None:
            return decode_vector(self.vector_b64)
        return None if self.vector is None else np.asarray(self.vector, dtype=np.float32)


def _text(value: str | None) -> str | None:
    if value is not None and not value.strip():
        raise ValueError("must not be empty or only whitespace")
    return reject_nul(value) if value is not None else None


class CreateCollection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: CollectionName
    embedder: str = Field(default="hashing", description="embeds `text` items and queries")
    dim: int | None = Field(default=None, ge=1, le=65536, description="default: the embedder's")
    metric: Literal["cosine", "ip", "l2"] = "cosine"
    index: Literal["auto", "flat", "hnsw", "ivf"] = "auto"
    ef_search: int | None = Field(default=None, ge=1, le=MAX_EF_SEARCH, description="HNSW")
    nprobe: int | None = Field(default=None, ge=1, le=MAX_NPROBE, description="IVF")
    """The default breadth of its searches, for the index kinds that use them."""
    exist_ok: bool = False

    @field_validator("ef_search", "nprobe")
    @classmethod
    def _fits_index(cls, value: int | None, info: ValidationInfo) -> int | None:
        kinds = {"ef_search": ("auto", "hnsw"), "nprobe": ("ivf",)}[str(info.field_name)]
        index = info.data.get("index")
        if value is not None and index is not None and index not in kinds:
            raise ValueError(
                f"applies to index {' or '.join(repr(k) for k in kinds)}, not {index!r}"
            )
        return value


class Collection(BaseModel):
    name: str
    dim: int
    metric: str
    embedder: str
    index: str
    last_seq: int
    items: int | None = None
    ef_search: int | None = None
    """The default HNSW breadth of its searches; None: max(192, 8k)."""
    nprobe: int | None = None
    """The default IVF lists of its searches; None: conveyor.vector.replica.default_nprobe."""


class DropCollection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: CollectionName
    missing_ok: bool = False


class Dropped(BaseModel):
    name: str
    dropped: bool


class NewVector(_HasVector):
    """One item to upsert: a vector, or a text the collection's embedder turns into one."""

    model_config = ConfigDict(extra="forbid")

    id: ItemId
    text: Annotated[str | None, AfterValidator(_text)] = Field(default=None, max_length=1_000_000)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _vector_or_text(self) -> NewVector:
        if self.vector is not None and self.vector_b64 is not None:
            raise ValueError("give vector or vector_b64, not both")
        if self.vector is None and self.vector_b64 is None and self.text is None:
            raise ValueError("give a vector, a text to embed, or both")
        return self


class Upsert(BaseModel):
    model_config = ConfigDict(extra="forbid")

    collection: CollectionName
    items: list[NewVector] = Field(min_length=1, max_length=MAX_BATCH)

    @field_validator("items")
    @classmethod
    def _unique_ids(cls, items: list[NewVector], info: ValidationInfo) -> list[NewVector]:
        seen: dict[str, int] = {}
        for i, item in enumerate(items):
            if item.id in seen:
                raise ValueError(f"id {item.id!r} appears twice (items {seen[item.id]} and {i})")
            seen[item.id] = i
        return items


class Upserted(BaseModel):
    collection: str
    count: int
    seq: int
    """The collection's seq after this write: pass it as `min_seq` to read your writes."""


class Delete(BaseModel):
    model_config = ConfigDict(extra="forbid")

    collection: CollectionName
    ids: list[ItemId] = Field(min_length=1, max_length=MAX_BATCH)


class Deleted(BaseModel):
    collection: str
    deleted: int
    seq: int


class Query(_HasVector):
    model_config = ConfigDict(extra="forbid")

    text: Annotated[str | None, AfterValidator(_text)] = Field(default=None, max_length=100_000)

    @model_validator(mode="after")
    def _one(self) -> Query:
        given = [x for x in (self.vector, self.vector_b64, self.text) if x is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of vector, vector_b64 or text")
        return self


class QueryMatrix(BaseModel):
    """A batch of query vectors as one float32 array, row after row: the fastest form for
    many queries (one decode instead of one model per query). Its bytes come inside the
    message (`b64`) or beside it in the broker's Redis (`blob`, a key `conveyor.blobs`
    wrote; `Client.vector` sends batches of 64 KiB or more that way)."""

    model_config = ConfigDict(extra="forbid")

    dim: int = Field(ge=1, le=65536)
    b64: Annotated[str, Field(max_length=MAX_MATRIX_B64), AfterValidator(_b64_vector)] | None = None
    blob: Annotated[str, Field(pattern=KEY_PATTERN)] | None = None

    @model_validator(mode="after")
    def _one_source(self) -> QueryMatrix:
        if (self.b64 is None) == (self.blob is None):
            raise ValueError("give b64 or blob, not both")
        if self.b64 is not None:
            try:
                matrix_rows(self._flat(), self.dim)
            except ValueError as exc:
                raise ValueError(f"b64 {exc}") from None
        return self

    def _flat(self) -> npt.NDArray[np.float32]:
        b64 = self.b64 or ""
        return b64.array if isinstance(b64, DecodedB64) else decode_vector(b64)

    def array(self) -> npt.NDArray[np.float32]:
        """The rows sent inside the message (`b64`); a `blob` is read by the service."""
        flat = self._flat()
        return flat.reshape(-1, self.dim) if len(flat) % self.dim == 0 else flat


class Search(BaseModel):
    model_config = ConfigDict(extra="forbid")

    collection: CollectionName
    queries: list[Query] = Field(default_factory=list, max_length=MAX_QUERIES)
    matrix: QueryMatrix | None = Field(default=None, description="instead of `queries`")
    k: int = Field(default=10, ge=1, le=MAX_K)
    where: Where = Field(default_factory=dict)
    min_seq: int | None = Field(default=None, ge=0, description="read at least this seq")
    ef_search: int | None = Field(default=None, ge=1, le=MAX_EF_SEARCH, description="HNSW breadth")
    nprobe: int | None = Field(default=None, ge=1, le=MAX_NPROBE, description="IVF lists searched")
    """Both default to the collection's, else to the rules in conveyor.vector.replica."""
    include: list[Include] = Field(
        default_factory=lambda: list(DEFAULT_INCLUDE),
        description="what to return besides ids and scores; [] is the fastest",
    )

    @model_validator(mode="after")
    def _queries_or_matrix(self) -> Search:
        if bool(self.queries) == (self.matrix is not None):
            raise ValueError("give queries (at least one) or a matrix, not both")
        return self


class Match(BaseModel):
    """One hit, as `SearchResult.results` gives it."""

    id: str
    score: float
    """Higher is better: cosine similarity, inner product, or minus the squared L2 distance."""
    metadata: dict[str, Any] | None = None
    """None unless the search included "metadata"."""
    text: str | None = None
    vector: list[float] | None = None


class SearchResult(BaseModel):
    """Columnar hits, one row per query (the compact form travels fastest); `results` gives
    them as `Match` objects. `metadata`, `texts` and `vectors` are there when included."""

    collection: str
    seq: int
    """The seq the answering replica had caught up to."""
    ids: list[list[str]]
    scores: list[list[float]]
    metadata: list[list[dict[str, Any]]] | None = None
    texts: list[list[str | None]] | None = None
    vectors: list[list[list[float]]] | None = None

    @property
    def results(self) -> list[list[Match]]:
        """The hits of each query as `Match` objects."""
        return [
            [
                Match(
                    id=item_id,
                    score=self.scores[q][j],
                    metadata=self.metadata[q][j] if self.metadata is not None else None,
                    text=self.texts[q][j] if self.texts is not None else None,
                    vector=self.vectors[q][j] if self.vectors is not None else None,
                )
                for j, item_id in enumerate(row)
            ]
            for q, row in enumerate(self.ids)
        ]


class StatsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    collection: CollectionName


class Stats(BaseModel):
    collection: Collection
    items: int
    tombstones: int
    replica_seq: int
    replica_kind: str
    replica_vectors: int


class SnapshotRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    collection: CollectionName


class Snapshotted(BaseModel):
    collection: str
    seq: int
    vectors: int
    path: str
    bytes: int
    seconds: float


class MaintainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    collection: CollectionName | None = None
    """One collection; by default every collection."""


class CollectionMaintained(BaseModel):
    collection: str
    seq: int = 0
    vectors: int = 0
    compacted: int = 0
    """Retired labels dropped by rebuilding the index (0: nothing to compact)."""
    snapshot: str | None = None
    """The faiss file written, or None with no snapshot directory."""
    bytes: int = 0
    error: str | None = None
    """Why this collection was skipped (dropped meanwhile, say)."""


class Maintained(BaseModel):
    collections: list[CollectionMaintained]
    seconds: float
