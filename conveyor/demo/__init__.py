"""`conveyor demo`: a realistic multi-agent workload on the example agents, end to end.

Stages (conveyor/demo/stages.py): ingest stdlib docstrings → research questions whose source
is known (recall) → async fetch → flaky retries → a malformed submission → analytics report.
Research and fetch run on the asyncio pool `io`, many runs in flight at once.
`live.py` draws the progress and per-pool queue depth; `summary.py` computes the figures.
"""

from conveyor.demo.stages import SIZES, Size, run_workload

__all__ = ["SIZES", "Size", "run_workload"]
