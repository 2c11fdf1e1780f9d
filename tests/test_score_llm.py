"""The LLM-judged variant against a scripted fake backend (no model)."""

import json

import pytest
from score_helpers import FakeBackend

from dftrain.score.llm_judge import CRITERIA, RETRY_TEXT, judge_many, parse_judgement


def _answer(value=4, **overrides):
    data = {name: value for name in CRITERIA}
    data.update(overrides)
    return json.dumps(data)


def test_parse_accepts_prose_fences_and_spelled_out_keys():
    spelled = {name.replace("_", " ").title(): 7 for name in CRITERIA}
    assert parse_judgement("Sure! ```json\n" + json.dumps(spelled) + "\n```") == {n: 7.0 for n in CRITERIA}
    assert parse_judgement(_answer(3)) == {n: 3.0 for n in CRITERIA}


@pytest.mark.parametrize(
    "text",
    ["", "no json here", "{broken", _answer(4, context_dependence=11), _answer(4, degree_of_abstraction="high"),
     json.dumps({"specificity_of_information": 5}), None],
)  # fmt: skip
def test_parse_rejects_invalid(text):
    assert parse_judgement(text) is None


def test_valid_json_first_time():
    backend = FakeBackend([[_answer(2), _answer(8)]])
    rows = judge_many(backend, ["Nike Air Max 270", "a shoe"])
    assert len(backend.calls) == 1 and len(backend.calls[0]) == 2
    assert rows[0]["generality"] == 2.0 and rows[1]["generality"] == 8.0
    assert rows[0]["attempts"] == 1 and not rows[0]["missing"]
    assert "Nike Air Max 270" in backend.calls[0][0][-1]["content"]


def test_invalid_then_valid_is_retried_once_with_a_follow_up():
    backend = FakeBackend([["I think it is general.", _answer(6)], [_answer(9)]])
    rows = judge_many(backend, ["a dog", "a cat"])
    assert len(backend.calls) == 2 and len(backend.calls[1]) == 1  # only the invalid one is retried
    retry = backend.calls[1][0]
    assert retry[-2] == {"role": "assistant", "content": "I think it is general."}
    assert retry[-1]["content"] == RETRY_TEXT
    assert rows[0]["generality"] == 9.0 and rows[0]["attempts"] == 2 and not rows[0]["missing"]
    assert rows[1]["generality"] == 6.0 and rows[1]["attempts"] == 1


def test_invalid_twice_is_recorded_missing_not_raised():
    backend = FakeBackend([["nope", _answer(5)], ["still nope"]])
    rows = judge_many(backend, ["x", "y", "x"])
    assert rows[0]["missing"] and rows[0]["generality"] is None
    assert all(rows[0][name] is None for name in CRITERIA)
    assert rows[2] == rows[0]  # duplicate caption: judged once, same row
    assert rows[1]["generality"] == 5.0
    assert len(backend.calls) == 2


def test_backend_exception_or_short_answer_list_is_missing_not_a_crash():
    def boom(conversations):
        raise RuntimeError("CUDA out of memory")

    rows = judge_many(FakeBackend([boom, boom]), ["a dog"])
    assert rows[0]["missing"]
    rows = judge_many(FakeBackend([[_answer(1)], [None]]), ["a", "b"])  # one answer for two prompts
    assert not rows[0]["missing"] and rows[1]["missing"]
