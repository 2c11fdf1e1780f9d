"""The paper's second, LLM-judged generality score.

An instruction-tuned LLM rates a caption on six criteria from 0 (specific) to
10 (general) and answers JSON. It runs through the caption-generalization
backend interface (dftrain.llm.backends: `.chat(conversations, *,
max_new_tokens) -> list[str]`, greedy). An answer that is not valid JSON with
all six criteria is retried once (with a corrective follow-up turn: greedy
decoding would repeat the same answer to the same prompt); a second failure is
recorded as missing (None), never an exception.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence

log = logging.getLogger("dftrain.score")

CRITERIA = (
    "specificity_of_information",
    "broadness_of_terms",
    "tense_and_modality",
    "degree_of_abstraction",
    "context_dependence",
    "universality_of_statements",
)
LLM_KEYS = (*CRITERIA, "generality")
DEFAULT_MAX_NEW_TOKENS = 160

SYSTEM_PROMPT = (
    "You rate how general an image caption is. For each criterion give a number from 0 to 10, "
    "where 0 means very specific and 10 means very general. Answer with one JSON object only."
)
# A schema, not an example answer: small models copy example numbers verbatim.
_EXAMPLE = ", ".join(f'"{name}": <0-10>' for name in CRITERIA)
USER_TEMPLATE = (
    "Rate this caption on: Specificity of Information, Broadness of Terms, Tense and Modality, "
    "Degree of Abstraction, Context Dependence, Universality of Statements.\n"
    'Caption: "{caption}"\n'
    "Answer only with JSON like {{" + _EXAMPLE + "}}."
)
RETRY_TEXT = "That was not valid. Reply with only the JSON object with the six numbers from 0 to 10."

_JSON_OBJECT = re.compile(r"\{.*?\}", re.DOTALL)


def _normalise_key(key: str) -> str:
    return re.sub(r"[^a-z]+", "_", key.lower()).strip("_")


def parse_judgement(text: str) -> dict[str, float] | None:
    """The six criteria from an LLM answer, or None when the answer is not usable.

    Accepts surrounding prose or code fences and keys spelled like the criteria's
    names ("Specificity of Information"); every value must be a number in [0, 10].
    """
    if not isinstance(text, str):
        return None
    for match in _JSON_OBJECT.finditer(text):
        try:
            data = json.loads(match.group(0))
        except ValueError:
            continue
        if not isinstance(data, dict):
            continue
        values = {_normalise_key(str(k)): v for k, v in data.items()}
        try:
            ratings = {name: float(values[name]) for name in CRITERIA}
        except (KeyError, TypeError, ValueError):
            continue
        if all(0.0 <= value <= 10.0 for value in ratings.values()):
            return ratings
    return None


def conversation_for(caption: str) -> list[dict]:
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": USER_TEMPLATE.format(caption=caption.replace('"', "'"))},
    ]


def _row(caption: str, ratings: dict[str, float] | None, attempts: int) -> dict:
    row: dict = {"caption": caption}
    for name in CRITERIA:
        row[name] = ratings[name] if ratings else None
    row["generality"] = round(sum(ratings.values()) / len(CRITERIA), 4) if ratings else None
    row["missing"] = ratings is None
    row["attempts"] = attempts
    return row


def judge_many(
    backend, captions: Sequence[str], *, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, batch_size: int = 64
) -> list[dict]:
    """One row per caption (criteria, their mean as "generality", "missing", "attempts"), in input order."""
    unique = list(dict.fromkeys(captions))
    results: dict[str, dict] = {}
    for start in range(0, len(unique), batch_size):
        chunk = unique[start : start + batch_size]
        results.update(_judge_chunk(backend, chunk, max_new_tokens))
    return [dict(results[caption]) for caption in captions]


def _ask(backend, conversations: list[list[dict]], max_new_tokens: int) -> list[str]:
    """backend.chat, with a backend failure turned into empty answers (recorded as missing later)."""
    try:
        replies = list(backend.chat(conversations, max_new_tokens=max_new_tokens))
    except Exception as exc:  # a backend fault must not lose the other scores
        log.warning("LLM backend failed on %d conversations: %s", len(conversations), exc)
        return [""] * len(conversations)
    if len(replies) != len(conversations):
        log.warning("LLM backend returned %d answers for %d prompts", len(replies), len(conversations))
        replies = (replies + [""] * len(conversations))[: len(conversations)]
    return [reply if isinstance(reply, str) else "" for reply in replies]


def _judge_chunk(backend, captions: list[str], max_new_tokens: int) -> dict[str, dict]:
    conversations = [conversation_for(caption) for caption in captions]
    first = _ask(backend, conversations, max_new_tokens)
    out: dict[str, dict] = {}
    retry: list[int] = []
    for i, (caption, reply) in enumerate(zip(captions, first, strict=True)):
        ratings = parse_judgement(reply)
        if ratings is None:
            retry.append(i)
        else:
            out[caption] = _row(caption, ratings, 1)
    if retry:
        follow_ups = [
            conversations[i]
            + [{"role": "assistant", "content": first[i] or ""}, {"role": "user", "content": RETRY_TEXT}]
            for i in retry
        ]
        second = _ask(backend, follow_ups, max_new_tokens)
        for i, reply in zip(retry, second, strict=True):
            ratings = parse_judgement(reply)
            if ratings is None:
                log.warning(
                    "LLM judge gave no valid JSON twice for caption %r: %r", captions[i][:80], reply[:80]
                )
            out[captions[i]] = _row(captions[i], ratings, 2)
    return out


def load_judge_backend(name: str = "embedded", model: str | None = None, **opts):
    """The generalization stage's text backend (imported lazily: it pulls in torch/transformers)."""
    from dftrain.errors import MissingDependencyError

    try:
        from dftrain.llm.backends import load_backend
    except ImportError as exc:
        raise MissingDependencyError(
            f"the LLM backends (dftrain.llm.backends) are not available: {exc}"
        ) from exc
    return load_backend(name, model=model, **opts)
