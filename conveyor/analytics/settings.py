"""Analytics' own settings: retention (CONVEYOR_RETENTION_*) and the report's latency
targets (CONVEYOR_SLO_*)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from conveyor.config import ENV_PREFIX, parse_json_setting, section, settings_section


@settings_section
class AnalyticsSettings(BaseSettings):
    """CONVEYOR_RETENTION_DAYS, _FAILED_DAYS, _BATCH; CONVEYOR_SLO_DEFAULT_SECONDS, _SECONDS."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    retention_days: int = Field(default=30, ge=1)
    """Finished runs older than this many days are purged (`analytics.retention`)."""
    retention_failed_days: int = Field(default=90, ge=1)
    """Failed and rejected runs are kept this long instead (at least retention_days)."""
    retention_batch: int = Field(default=5000, ge=1, le=100_000)
    """Rows per DELETE statement of the purge."""
    slo_default_seconds: float = Field(default=10.0, gt=0)
    """Latency target of agents without their own, for the report's SLO view."""
    slo_seconds: Annotated[dict[str, float], NoDecode] = Field(default_factory=dict)
    """Per-agent latency targets, JSON: {"research": 30}."""

    @field_validator("slo_seconds", mode="before")
    @classmethod
    def _parse_targets(cls, value: Any) -> Any:
        """JSON text from the environment; bad JSON is a ConfigError naming the variable."""
        return parse_json_setting(value)

    @model_validator(mode="after")
    def _check_retention(self) -> AnalyticsSettings:
        if self.retention_failed_days < self.retention_days:
            raise ValueError(
                f"CONVEYOR_RETENTION_FAILED_DAYS ({self.retention_failed_days}) must be at least "
                f"CONVEYOR_RETENTION_DAYS ({self.retention_days}): failures are kept longer"
            )
        return self


def analytics_settings() -> AnalyticsSettings:
    """This process's analytics settings, read from the environment once."""
    return section(AnalyticsSettings)
