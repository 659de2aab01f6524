"""Vector requests: base64 vectors and the checks on them, without services."""

from __future__ import annotations

import base64

import numpy as np
import pytest
from pydantic import ValidationError

from conveyor.vector.schema import Query, Upsert, decode_vector, encode_vector


def test_base64_vectors_round_trip_exactly() -> None:
    values = [0.1, -2.5, 3e-8, 1e30]
    query = Query.model_validate({"vector_b64": encode_vector(values)})
    assert query.array() is not None
    assert np.array_equal(query.array(), np.asarray(values, dtype=np.float32))
    assert np.array_equal(decode_vector(encode_vector(values)), np.float32(values))


@pytest.mark.parametrize(
    ("b64", "words"),
    [
        (encode_vector([1.0, float("nan")]), "value 1 is nan"),
        (encode_vector([float("inf")]), "value 0 is inf"),
        ("not base64!", "not valid base64"),
        (base64.b64encode(b"abcde").decode(), "5 bytes"),
    ],
)
def test_bad_base64_vectors_are_refused(b64: str, words: str) -> None:
    with pytest.raises(ValidationError, match=words):
        Query.model_validate({"vector_b64": b64})


def test_a_query_is_exactly_one_of_vector_vector_b64_or_text() -> None:
    with pytest.raises(ValidationError, match="exactly one"):
        Query.model_validate({"vector": [1.0], "text": "x"})
    with pytest.raises(ValidationError, match="exactly one"):
        Query.model_validate({})


def test_duplicate_ids_in_a_batch_are_named() -> None:
    items = [{"id": "a", "vector": [1.0]}, {"id": "b", "text": "t"}, {"id": "a", "text": "u"}]
    with pytest.raises(ValidationError, match=r"id 'a' appears twice \(items 0 and 2\)"):
        Upsert.model_validate({"collection": "c", "items": items})
