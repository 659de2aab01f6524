"""The vector service's pydantic models: requests, results and limits."""

from __future__ import annotations

import base64
import math
from typing import Annotated, Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from conveyor.filters import Where
from conveyor.models.jsonb import reject_nul

MAX_K = 1000
MAX_BATCH = 10_000
MAX_QUERIES = 1000


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
    return np.frombuffer(base64.b64decode(value, validate=True), dtype="<f4").astype(np.float32)


def encode_vector(values: Any) -> str:
    """The base64 form of a vector (any sequence of numbers)."""
    return base64.b64encode(np.asarray(values, dtype="<f4").tobytes()).decode()


def _b64_vector(value: str) -> str:
    try:
        raw = base64.b64decode(value, validate=True)
    except ValueError:
        raise ValueError("is not valid base64") from None
    if not raw or len(raw) % 4:
        raise ValueError(f"decodes to {len(raw)} bytes, not a whole number of float32 values")
    array = np.frombuffer(raw, dtype="<f4")
    bad = np.flatnonzero(~np.isfinite(array))
    if bad.size:
        raise ValueError(
            f"value {bad[0]} is {array[bad[0]]}; vectors must be finite (no NaN or infinity)"
        )
    return value


VectorB64 = Annotated[str, Field(max_length=350_000), AfterValidator(_b64_vector)]
"""A vector as base64 of little-endian float32: far smaller and faster than a JSON list."""


class _HasVector(BaseModel):
    vector: Vector | None = None
    vector_b64: VectorB64 | None = None

    def array(self) -> npt.NDArray[np.float32] | None:
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
    exist_ok: bool = False


class Collection(BaseModel):
    name: str
    dim: int
    metric: str
    embedder: str
    index: str
    last_seq: int
    items: int | None = None


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


class Search(BaseModel):
    model_config = ConfigDict(extra="forbid")

    collection: CollectionName
    queries: list[Query] = Field(min_length=1, max_length=MAX_QUERIES)
    k: int = Field(default=10, ge=1, le=MAX_K)
    where: Where = Field(default_factory=dict)
    min_seq: int | None = Field(default=None, ge=0, description="read at least this seq")
    ef_search: int | None = Field(
        default=None, ge=1, le=4096, description="HNSW breadth (default max(128, 8k))"
    )
    with_vectors: bool = False


class Match(BaseModel):
    id: str
    score: float
    """Higher is better: cosine similarity, inner product, or minus the squared L2 distance."""
    metadata: dict[str, Any]
    text: str | None = None
    vector: list[float] | None = None


class SearchResult(BaseModel):
    collection: str
    seq: int
    """The seq the answering replica had caught up to."""
    results: list[list[Match]]


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
