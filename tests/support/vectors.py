"""Seeded vectors with topics, where an approximate index can miss what exact search finds."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]


def clustered(
    count: int, queries: int, dim: int, *, clusters: int, spread: float, seed: int
) -> tuple[F32, F32]:
    """`count` points and `queries` queries, each a random one of `clusters` centres plus
    normal noise of `spread`."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))

    def around(n: int) -> Any:
        return centres[rng.integers(0, clusters, n)] + spread * rng.normal(size=(n, dim))

    data = around(count)
    return data.astype(np.float32), around(queries).astype(np.float32)
