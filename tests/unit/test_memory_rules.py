"""Memory's text rules and input limits, without services."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from conveyor.config import load_section
from conveyor.memory import ForgetRequest, MemorySettings, RememberRequest, SearchRequest
from conveyor.memory.text import content_hash, count_tokens, escape_nul, unescape_nul
from conveyor.models import jsonb


@pytest.mark.parametrize(
    "text", ["plain", "a\x00b", "\\0", "\\\x00\\", "\x00\x00", "emoji 🧠 \x00 中文", ""]
)
def test_nul_escaping_round_trips(text: str) -> None:
    stored, escaped = escape_nul(text)
    assert "\x00" not in stored
    assert escaped == ("\x00" in text)
    assert unescape_nul(stored, escaped) == text


def test_hash_ignores_whitespace_runs_and_unicode_form_but_not_case() -> None:
    assert content_hash("a  b\n") == content_hash(" a b")
    assert content_hash("caf\u00e9") == content_hash("cafe\u0301")
    assert content_hash("Hello") != content_hash("hello")


def test_token_count_grows_with_words_and_long_words() -> None:
    assert count_tokens("hi, you!") == 4
    assert count_tokens("internationalization") == 5
    assert count_tokens("") == 0


def test_jsonb_round_trips_nul_and_leaves_other_values_alone() -> None:
    value = {"a": "x\x00y\\0", "b": ["\x00", 1, None], "c": {"d": "plain"}}
    dumped = jsonb.dumps(value)
    assert "\\u0000" not in dumped
    assert jsonb.restore(json.loads(dumped)) == value
    assert json.loads(jsonb.dumps({"a": "plain"})) == {"a": "plain"}


def test_jsonb_text_is_what_the_standard_library_reads_and_refuses_what_it_refuses() -> None:
    value = {"ints": [2**70, -1], "keys": {1: "one"}, "floats": [0.1, 1e300], "s": "\u00e9\n"}
    assert json.loads(jsonb.encode(value)) == json.loads(json.dumps(value))
    with pytest.raises(TypeError):
        jsonb.encode({"when": datetime.now(UTC)})


def test_limits_come_from_the_settings_in_the_validation_context() -> None:
    context = {"memory": load_section(MemorySettings, max_batch=2, max_content_bytes=10)}
    payload = {"namespace": "n", "session": "s", "items": [{"content": "x"}] * 3}
    with pytest.raises(ValidationError, match="CONVEYOR_MEMORY_MAX_BATCH"):
        RememberRequest.model_validate(payload, context=context)
    RememberRequest.model_validate(payload)
    big = {"namespace": "n", "session": "s", "items": [{"content": "x" * 11}]}
    with pytest.raises(ValidationError, match="11 bytes; the limit is 10 bytes"):
        RememberRequest.model_validate(big, context=context)


def test_forget_needs_exactly_one_kind_of_scope() -> None:
    with pytest.raises(ValidationError, match="say what to forget"):
        ForgetRequest.model_validate({"namespace": "n"})
    with pytest.raises(ValidationError, match="give no ids"):
        ForgetRequest.model_validate({"namespace": "n", "everything": True, "session": "s"})
    ForgetRequest.model_validate({"namespace": "n", "session": "s", "where": {"k": 1}})


def test_metadata_filters_keep_json_types_apart() -> None:
    where = SearchRequest.model_validate(
        {"namespace": "n", "query": "q", "where": {"b": True, "i": 1, "s": "1"}}
    ).where
    assert [type(v) for v in where.values()] == [bool, int, str]
    with pytest.raises(ValidationError, match="numbers or times, not both"):
        SearchRequest.model_validate(
            {"namespace": "n", "query": "q", "where": {"x": {"gt": 1, "lt": "2026-01-01T00:00Z"}}}
        )


def test_reciprocal_rank_fusion_rewards_agreement() -> None:
    from conveyor.memory.hybrid import fuse

    fused = fuse([["a", "b", "c"], ["c", "a"]], rrf_k=60)
    assert [item for item, _ in fused] == ["a", "c", "b"]
    assert fused[0][1] == pytest.approx(1 / 61 + 1 / 62)
