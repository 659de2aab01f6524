"""SQLAlchemy 2.0 typed models, the run repository and Alembic migrations."""

from conveyor.models.base import Base
from conveyor.models.repository import Run, RunRepository
from conveyor.models.runs import FINAL_STATUSES, AgentRun, RunStatus

__all__ = ["FINAL_STATUSES", "AgentRun", "Base", "Run", "RunRepository", "RunStatus"]
