"""Memory's own settings: the CONVEYOR_MEMORY_MAX_* limits on one call."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from conveyor.config import ENV_PREFIX, section, settings_section

MiB = 1024 * 1024
TEN_YEARS = 10 * 365 * 86400


@settings_section
class MemorySettings(BaseSettings):
    """CONVEYOR_MEMORY_MAX_CONTENT_BYTES, _MAX_BATCH, _MAX_TTL_SECONDS and _MAX_WINDOW."""

    model_config = SettingsConfigDict(
        env_prefix=f"{ENV_PREFIX}MEMORY_", extra="ignore", frozen=True
    )

    max_content_bytes: int = Field(default=MiB, ge=1)
    """UTF-8 bytes of one item's content."""
    max_batch: int = Field(default=1000, ge=1)
    """Items of one remember call."""
    max_ttl_seconds: int = Field(default=TEN_YEARS, ge=1)
    max_window: int = Field(default=10_000, ge=1)
    """Items of one recall window."""


def memory_settings() -> MemorySettings:
    """This process's memory settings, read from the environment once."""
    return section(MemorySettings)
