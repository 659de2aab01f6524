"""Vector requests: base64 vectors and the checks on them, without services."""

from __future__ import annotations

import base64
import re

import numpy as np
import pytest
from pydantic import ValidationError

from conveyor.agents import registry
from conveyor.blobs import is_blob_key
from conveyor.errors import InvalidInput
from conveyor.vector.schema import (
    MAX_QUERIES,
    CreateCollection,
    Query,
    QueryMatrix,
    Search,
    SearchResult,
    Upsert,
    decode_vector,
    encode_vector,
    float32s,
    matrix_rows,
)


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


def test_include_names_the_unknown_field_and_the_choices() -> None:
    with pytest.raises(ValidationError, match=r"include\.0[\s\S]*'metadata', 'text' or 'vector'"):
        Search.model_validate({"collection": "c", "queries": [{"text": "q"}], "include": ["x"]})


def test_columnar_results_read_back_as_matches() -> None:
    result = SearchResult(
        collection="c", seq=3, ids=[["a", "b"], []], scores=[[0.9, 0.5], []],
        metadata=[[{"k": 1}, {}], []],
    )  # fmt: skip
    assert [[(m.id, m.score, m.metadata, m.text) for m in row] for row in result.results] == [
        [("a", 0.9, {"k": 1}, None), ("b", 0.5, {}, None)],
        [],
    ]


def _matrix(rows: int, dim: int, values: int | None = None) -> dict[str, object]:
    flat = np.arange(values if values is not None else rows * dim, dtype=np.float32)
    return {"dim": dim, "b64": encode_vector(flat)}


def test_a_query_matrix_decodes_once_into_rows() -> None:
    search = Search.model_validate({"collection": "c", "matrix": _matrix(3, 4)})
    assert search.matrix is not None and search.matrix.array().shape == (3, 4)
    assert search.matrix.array()[2, 3] == 11.0


@pytest.mark.parametrize(
    ("payload", "words"),
    [
        (
            {"matrix": _matrix(0, 4, values=10)},
            "b64 holds 10 values, not whole rows of dim 4",
        ),
        ({"matrix": _matrix(1001, 2)}, "b64 holds 1001 rows; at most 1000"),
        ({}, "give queries (at least one) or a matrix, not both"),
        ({"matrix": _matrix(1, 2), "queries": [{"text": "q"}]}, "not both"),
    ],
)
def test_bad_query_matrices_are_named(payload: dict[str, object], words: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(words)):
        Search.model_validate({"collection": "c", **payload})


def test_a_query_matrix_comes_inside_the_message_or_beside_it_never_both() -> None:
    rows = encode_vector(np.ones(8))
    inside = QueryMatrix.model_validate({"dim": 4, "b64": rows})
    assert inside.array().shape == (2, 4)
    beside = QueryMatrix.model_validate({"dim": 4, "blob": "conveyor:blob:" + "ab" * 16})
    assert beside.b64 is None and is_blob_key(beside.blob or "")
    with pytest.raises(ValidationError, match="not both"):
        QueryMatrix.model_validate({"dim": 4, "b64": rows, "blob": beside.blob})
    with pytest.raises(ValidationError, match="not both"):
        QueryMatrix.model_validate({"dim": 4})
    for key in ("conveyor:blob:xyz", "other:" + "ab" * 16, "conveyor:blob:" + "AB" * 16):
        with pytest.raises(ValidationError, match="should match pattern"):
            QueryMatrix.model_validate({"dim": 4, "blob": key})


def test_matrix_bytes_must_be_whole_finite_rows_within_the_limit() -> None:
    assert matrix_rows(float32s(np.ones(6, "<f4").tobytes()), 3).shape == (2, 3)
    with pytest.raises(ValueError, match="6 bytes"):
        float32s(b"abcdef")
    with pytest.raises(ValueError, match="value 2 is inf"):
        float32s(np.array([0, 1, np.inf], "<f4").tobytes())
    with pytest.raises(ValueError, match="not whole rows of dim 4"):
        matrix_rows(np.ones(6, np.float32), 4)
    with pytest.raises(ValueError, match=f"at most {MAX_QUERIES}"):
        matrix_rows(np.ones(MAX_QUERIES + 1, np.float32), 1)


@pytest.mark.parametrize(
    ("agent", "payload", "words"),
    [
        ("vector.search", {"nprobe": 0}, "nprobe: Input should be greater than or equal to 1"),
        ("vector.search", {"nprobe": 4097}, "nprobe: Input should be less than or equal to 4096"),
        ("vector.search", {"nprobe": "all"}, "nprobe: Input should be a valid integer"),
        ("vector.search", {"nprobe": 2.5}, "nprobe: Input should be a valid integer"),
        ("vector.search", {"ef_search": 0}, "ef_search: Input should be greater than or equal"),
        ("vector.create_collection", {"index": "ivf", "nprobe": 0}, "nprobe: Input should be"),
        (
            "vector.create_collection",
            {"index": "ivf", "nprobe": 5000},
            "nprobe: Input should be less than or equal to 4096",
        ),
        (
            "vector.create_collection",
            {"index": "hnsw", "nprobe": 8},
            "nprobe: Value error, applies to index 'ivf', not 'hnsw'",
        ),
        (
            "vector.create_collection",
            {"nprobe": 8},
            "nprobe: Value error, applies to index 'ivf', not 'auto'",
        ),
        (
            "vector.create_collection",
            {"index": "ivf", "ef_search": 64},
            "ef_search: Value error, applies to index 'auto' or 'hnsw', not 'ivf'",
        ),
    ],
)
def test_bad_search_breadths_are_refused_naming_the_field_and_the_limit(
    agent: str, payload: dict[str, object], words: str
) -> None:
    full = {"collection": "c", "queries": [{"text": "q"}]} if agent == "vector.search" else {}
    full |= {"name": "c"} if agent == "vector.create_collection" else {}
    with pytest.raises(InvalidInput) as caught:
        registry.get(agent).validate_input(full | payload)
    assert f"invalid input for {agent}: {words}" in str(caught.value)


def test_search_breadths_within_the_limits_are_kept() -> None:
    search = Search.model_validate(
        {"collection": "c", "queries": [{"text": "q"}], "nprobe": 4096, "ef_search": 1}
    )
    assert (search.nprobe, search.ef_search) == (4096, 1)
    created = CreateCollection.model_validate({"name": "c", "index": "ivf", "nprobe": 1})
    assert (created.nprobe, created.ef_search) == (1, None)
    hnsw = CreateCollection.model_validate({"name": "c", "index": "hnsw", "ef_search": 4096})
    assert hnsw.ef_search == 4096
