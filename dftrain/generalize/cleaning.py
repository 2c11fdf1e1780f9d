"""Cleaning and validation of raw LLM outputs (pure functions).

clean_output() turns what a model said into a caption candidate: first non-empty
line, no preamble ("Here is a general caption:"), no surrounding quotes or markdown,
no trailing punctuation, single spaces.

rejection_reason() says why a cleaned candidate cannot be used (None when it can):
  empty        nothing left after cleaning, or no letters at all
  refusal      "I'm sorry", "I cannot", "As an AI", ...
  copy         the original caption again (allowed only when the original itself would pass)
  too_long     more than `max_words` words
  kept_number  a number or product code of the original survived
  number       any other digit (invented sizes, years, codes)
  name         a capitalized word after the first (a name or brand), or a first word
               that the original capitalizes mid-sentence ("Obama ...")
  example_echo (few-shot prompts, checked by the generalizer) the answer of a few-shot example
               sharing no word with the caption nor with that example: a guess, not a summary
  unfaithful   (checked by the generalizer, see faithful.py) no head noun of the original kept,
               nor a WordNet synonym or non-abstract hypernym of one
"""

from __future__ import annotations

import re

REASONS = ("empty", "refusal", "too_long", "copy", "kept_number", "number", "name", "example_echo", "unfaithful")

_PREAMBLE = re.compile(
    r"""^(?:
        (?:sure|okay|ok|certainly|of\ course)\b[\s,!.:-]*
      | (?:here\s+(?:is|are|'s)|this\s+is|the\s+answer\s+is)\b[^:\n]*?(?::|$)\s*
      | (?:the\s+)?(?:(?:more|extremely|very)\s+)?(?:general(?:ized)?|generic|simplified|short(?:er)?)\s+
          (?:caption|description|version)[^:\n]*:\s*
      | (?:caption|description|answer|output|result|general|generalized|response)\s*:\s*
    )""",
    re.IGNORECASE | re.VERBOSE,
)
_QUOTES = "\"'`\u201c\u201d\u2018\u2019\u00ab\u00bb*_"
_LIST_MARKER = re.compile(r"^(?:[-*\u2022]\s+|\d+[.)]\s+)")
_TRAILING = ".,;:!?\u2026"
_REFUSAL = re.compile(
    r"\b(?:i'?m\s+sorry|i\s+am\s+sorry|i\s+apologi[sz]e|i\s+can(?:no|')t|i\s+am\s+unable|i'?m\s+unable"
    r"|as\s+an\s+ai|i\s+won'?t|cannot\s+(?:help|assist|comply|provide)|not\s+able\s+to)\b",
    re.IGNORECASE,
)
_WORD = re.compile(r"[^\W_](?:[\w'\-./]*[^\W_])?", re.UNICODE)
_DIGIT = re.compile(r"\d")


def clean_output(raw: str) -> str:
    """The caption candidate inside a raw model output ('' when there is none)."""
    lines = [line.strip() for line in raw.replace("\r", "\n").split("\n")]
    lines = [line for line in lines if line]
    if not lines:
        return ""
    text = lines[0]
    # A preamble line alone ("Here is a general caption:") puts the answer on the next line.
    for _ in range(3):
        stripped = _PREAMBLE.sub("", text, count=1).strip()
        if stripped == text:
            break
        text = stripped
    if not text and len(lines) > 1:
        return clean_output("\n".join(lines[1:]))
    text = _LIST_MARKER.sub("", text)
    for _ in range(3):
        before = text
        text = text.strip().strip(_QUOTES).strip().rstrip(_TRAILING).strip()
        if text == before:
            break
    return " ".join(text.split())


def words(text: str) -> list[str]:
    """Word tokens (letters/digits, keeping inner hyphens, dots, slashes and apostrophes)."""
    return _WORD.findall(text)


def normalize(text: str) -> str:
    """Lower-case words joined by single spaces: for comparing captions."""
    return " ".join(w.lower() for w in words(text))


def is_code(token: str) -> bool:
    """A number or product code: any digit, or inner capitals / all-caps of 2+ letters (XJ, iPhone)."""
    if _DIGIT.search(token):
        return True
    letters = [c for c in token if c.isalpha()]
    if len(letters) >= 2 and all(c.isupper() for c in letters) and len(token) <= 6:
        return True
    return any(c.isupper() for c in token[1:]) and any(c.islower() for c in token)


def codes_in(text: str) -> set[str]:
    """Numbers and product codes in a caption, lower-cased."""
    return {w.lower() for w in words(text) if is_code(w)}


def rejection_reason(candidate: str, original: str, *, max_words: int) -> str | None:
    """Why a cleaned candidate is unusable as the general version of `original`; None if usable."""
    tokens = words(candidate)
    if not tokens or not any(c.isalpha() for c in candidate):
        return "empty"
    if _REFUSAL.search(candidate):
        return "refusal"
    if normalize(candidate) == normalize(original) and _needs_change(original, max_words):
        return "copy"
    if len(tokens) > max_words:
        return "too_long"
    digits_or_codes = {t.lower() for t in tokens if _DIGIT.search(t)}
    kept = codes_in(candidate) & codes_in(original)
    if kept:
        return "kept_number"
    if digits_or_codes:
        return "number"
    if _has_name(tokens, original):
        return "name"
    return None


def _has_name(tokens: list[str], original: str) -> bool:
    if any(t[:1].isupper() and t != "I" for t in tokens[1:]):
        return True
    # The first word is capitalized anyway at a sentence start; it is a name when the
    # original capitalizes it in the middle of a sentence.
    mid_sentence_caps = {w for w in words(original)[1:] if w[:1].isupper()}
    return tokens[0][:1].isupper() and tokens[0] in mid_sentence_caps


def _needs_change(original: str, max_words: int) -> bool:
    # "a dog" generalized to "a dog" is fine; a long or coded caption copied is not.
    return len(words(original)) > max_words or bool(codes_in(original))


_FUNCTION_WORDS = {"a", "an", "the", "of", "in", "on", "at", "with", "and", "or", "to", "for", "by", "from"}


def _stem(word: str) -> str:
    # Crude on purpose: "shoes"/"shoe", "sleeping"/"sleeps" share their first 4 letters.
    return word.lower()[:4]


def _content_stems(text: str) -> set[str]:
    return {_stem(w) for w in words(text) if w.lower() not in _FUNCTION_WORDS and not _DIGIT.search(w)}


def echoes_example(candidate: str, original: str, examples: dict[str, str] | set[str]) -> bool:
    """True when `candidate` repeats a few-shot example's answer that has nothing to do with `original`.

    `examples` maps each example answer to its specific caption (or is a set of answers).
    An echo is plausible, not a guess, when the original shares a content word with the
    answer or with the example's specific caption ("Vintage 1967 Ford ..." -> "an old car").
    """
    key = normalize(candidate)
    if key not in examples:
        return False
    related = _content_stems(candidate)
    if isinstance(examples, dict):
        related |= _content_stems(examples[key])
    return not related & _content_stems(original)


def validate(raw: str, original: str, *, max_words: int) -> tuple[str, str | None]:
    """(cleaned caption, rejection reason or None) for one raw output."""
    cleaned = clean_output(raw)
    return cleaned, rejection_reason(cleaned, original, max_words=max_words)
