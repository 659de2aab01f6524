"""Text rules of the memory store: normalised hashes, NUL escaping, approximate tokens.

NUL: PostgreSQL `text` cannot hold U+0000. Content that contains it is stored escaped (each
backslash doubled, each NUL written as the two characters `\\0`) with `escaped = true`, and
unescaped on the way out, so every string comes back exactly as it went in. Full-text search
sees the escaped form. Content without NUL is stored as is. Metadata is JSONB, which also
refuses U+0000, so a NUL anywhere in metadata is refused as bad input.
"""

from __future__ import annotations

import hashlib
import math
import re
import unicodedata

from conveyor.models import jsonb
from conveyor.models.jsonb import NUL

_SPACE = re.compile(r"\s+")
_PIECES = re.compile(r"\w+|[^\w\s]")
CHARS_PER_TOKEN = 4


def normalise(content: str) -> str:
    """The form two contents must share to count as the same: NFC, whitespace collapsed."""
    return _SPACE.sub(" ", unicodedata.normalize("NFC", content)).strip()


def content_hash(content: str) -> str:
    """SHA-256 (hex) of the normalised content: the dedup key within a session."""
    return hashlib.sha256(normalise(content).encode("utf-8", "surrogatepass")).hexdigest()


def count_tokens(content: str) -> int:
    """Approximate LLM tokens: each word or punctuation mark, long words per 4 characters.

    Within about 20 % of BPE tokenizers (GPT-style) on English prose; it never needs a model
    download and is stable across versions, which matters because it is stored per item.
    """
    return sum(math.ceil(len(piece) / CHARS_PER_TOKEN) for piece in _PIECES.findall(content))


def escape_nul(content: str) -> tuple[str, bool]:
    """The storable form of `content`, and whether it had to be escaped."""
    return (jsonb.escape_nul(content), True) if NUL in content else (content, False)


def unescape_nul(stored: str, escaped: bool) -> str:
    """The original content of a stored value."""
    return jsonb.unescape_nul(stored) if escaped else stored
