"""The memory service's pydantic models: what goes in, what comes out, and the limits."""

from __future__ import annotations

import enum
import math
from datetime import datetime
from typing import Annotated, Any, Literal

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
from conveyor.memory.settings import TEN_YEARS, MemorySettings, MiB, memory_settings
from conveyor.models.jsonb import NUL, reject_nul


class Role(enum.StrEnum):
    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"
    TOOL = "tool"
    NOTE = "note"


class MemoryLimits(BaseModel):
    """Bounds on one call; set through the CONVEYOR_MEMORY_MAX_* settings (`MemorySettings`)."""

    max_content_bytes: int = MiB
    max_batch: int = 1000
    max_ttl_seconds: int = TEN_YEARS
    max_window: int = 10_000

    @classmethod
    def from_settings(cls, settings: MemorySettings) -> MemoryLimits:
        """The limits of CONVEYOR_MEMORY_MAX_*."""
        return cls(
            max_content_bytes=settings.max_content_bytes,
            max_batch=settings.max_batch,
            max_ttl_seconds=settings.max_ttl_seconds,
            max_window=settings.max_window,
        )

    @classmethod
    def of(cls, info: ValidationInfo) -> MemoryLimits:
        """The limits of the validation context's `memory` settings when it has them (a test's),
        else this process's (`memory_settings()`, read from the environment once)."""
        settings = (info.context or {}).get("memory")
        return cls.from_settings(settings if settings is not None else memory_settings())


Name = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(reject_nul)]
"""A namespace or session: any text up to 200 characters, compared exactly."""


def _check_metadata(value: Any, path: str = "metadata") -> None:
    if isinstance(value, str) and NUL in value:
        raise ValueError(f"{path} must not contain NUL (U+0000); JSONB cannot store it")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{path} must be a finite number")
    if isinstance(value, dict):
        for key, item in value.items():
            _check_metadata(key, f"{path} key {key!r}")
            _check_metadata(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_metadata(item, f"{path}[{i}]")


class NewItem(BaseModel):
    """One thing to remember."""

    model_config = ConfigDict(extra="forbid")

    content: str
    role: Role = Role.USER
    metadata: dict[str, Any] = Field(default_factory=dict)
    ttl_seconds: float | None = Field(default=None, description="expire this many seconds from now")

    @field_validator("content")
    @classmethod
    def _content_fits(cls, value: str, info: ValidationInfo) -> str:
        if not value.strip():
            raise ValueError("must not be empty or only whitespace")
        limit = MemoryLimits.of(info).max_content_bytes
        size = len(value.encode("utf-8", "surrogatepass"))
        if size > limit:
            raise ValueError(
                f"is {size} bytes; the limit is {limit} bytes (CONVEYOR_MEMORY_MAX_CONTENT_BYTES)"
            )
        return value

    @field_validator("metadata")
    @classmethod
    def _metadata_storable(cls, value: dict[str, Any]) -> dict[str, Any]:
        _check_metadata(value)
        return value

    @field_validator("ttl_seconds")
    @classmethod
    def _ttl_sane(cls, value: float | None, info: ValidationInfo) -> float | None:
        if value is None:
            return None
        limit = MemoryLimits.of(info).max_ttl_seconds
        if not math.isfinite(value) or value <= 0:
            raise ValueError("must be a positive number of seconds")
        if value > limit:
            raise ValueError(
                f"is {value:g}s; the limit is {limit}s (CONVEYOR_MEMORY_MAX_TTL_SECONDS)"
            )
        return value


class Item(BaseModel):
    """A stored memory item."""

    id: str
    namespace: str
    session: str
    seq: int
    role: Role
    content: str
    metadata: dict[str, Any]
    tokens: int
    created_at: datetime
    expires_at: datetime | None = None


class RememberRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    namespace: Name
    session: Name
    items: list[NewItem] = Field(min_length=1)
    dedup: bool = Field(default=True, description="return an existing item for repeated content")
    embed: bool = Field(default=False, description="also index the items for hybrid search")

    @field_validator("items")
    @classmethod
    def _batch_fits(cls, value: list[NewItem], info: ValidationInfo) -> list[NewItem]:
        limit = MemoryLimits.of(info).max_batch
        if len(value) > limit:
            raise ValueError(
                f"has {len(value)} items; the limit is {limit} (CONVEYOR_MEMORY_MAX_BATCH)"
            )
        return value


class Remembered(BaseModel):
    id: str
    seq: int
    deduped: bool


class RememberResult(BaseModel):
    namespace: str
    session: str
    items: list[Remembered]


class RecallRequest(BaseModel):
    """A session's window: the newest items that pass every given bound."""

    model_config = ConfigDict(extra="forbid")

    namespace: Name
    session: Name
    last: int | None = Field(default=None, ge=1, description="at most this many items")
    since: datetime | None = Field(default=None, description="items created at or after")
    max_tokens: int | None = Field(default=None, ge=1, description="approximate token budget")

    @field_validator("last")
    @classmethod
    def _window_fits(cls, value: int | None, info: ValidationInfo) -> int | None:
        limit = MemoryLimits.of(info).max_window
        if value is not None and value > limit:
            raise ValueError(f"is {value}; the limit is {limit} (CONVEYOR_MEMORY_MAX_WINDOW)")
        return value


class Window(BaseModel):
    """A recall: items in conversation order (oldest first), ready for a prompt."""

    namespace: str
    session: str
    items: list[Item]
    tokens: int
    cached: bool = False


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    namespace: Name
    query: str = Field(min_length=1, max_length=1000)
    session: Name | None = None
    where: Where = Field(default_factory=dict)
    limit: int = Field(default=10, ge=1, le=1000)
    mode: Literal["text", "hybrid"] = Field(
        default="text", description="hybrid: fuse full-text and vector rankings (RRF)"
    )
    rrf_k: int = Field(default=60, ge=1, le=10_000, description="RRF constant")
    candidates: int = Field(default=50, ge=1, le=1000, description="items taken per ranking")

    @field_validator("query")
    @classmethod
    def _query_has_words(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty or only whitespace")
        return reject_nul(value)


class Hit(BaseModel):
    item: Item
    rank: float
    """ts_rank_cd for text search; the fused RRF score for hybrid search."""
    text_rank: int | None = None
    vector_rank: int | None = None


class SearchResult(BaseModel):
    namespace: str
    hits: list[Hit]


class ForgetRequest(BaseModel):
    """What to delete within one namespace: ids, a session, a filter, or everything."""

    model_config = ConfigDict(extra="forbid")

    namespace: Name
    ids: list[str] | None = Field(default=None, min_length=1, max_length=10_000)
    session: Name | None = None
    where: Where | None = None
    everything: Literal[True] | None = Field(
        default=None, description="delete the whole namespace; must be given on its own"
    )

    @model_validator(mode="after")
    def _one_scope(self) -> ForgetRequest:
        narrowing = [self.ids, self.session, self.where]
        if self.everything and any(x is not None for x in narrowing):
            raise ValueError("everything=true deletes the namespace; give no ids, session, where")
        if not self.everything and all(x is None for x in narrowing):
            raise ValueError("say what to forget: ids, session, where, or everything=true")
        return self


class Forgotten(BaseModel):
    namespace: str
    deleted: int


class StatsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    namespace: Name


class Stats(BaseModel):
    namespace: str
    sessions: int
    items: int
    bytes: int
    oldest: datetime | None
    newest: datetime | None


class SweepRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    batch_size: int = Field(default=1000, ge=1, le=100_000)
    max_batches: int = Field(default=100, ge=1, le=100_000)


class Swept(BaseModel):
    deleted: int
    batches: int
