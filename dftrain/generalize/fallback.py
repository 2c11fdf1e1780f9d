"""A deterministic rule-based generalizer: the caption's head noun phrase without names,
numbers and codes (pure functions, no model).

    rule_generalize("Nike Air Max 90 running shoes in red, size 10")      -> "running shoes"
    rule_generalize("A photo of a golden retriever playing in the park")  -> "a golden retriever"
    rule_generalize("2019 ©")                                            -> "an image"

With `head_noun` (given by the faithfulness check's parser), that noun is kept whatever the word
lists say. Steps otherwise: keep the first clause (before " | ", " - ", ",", ";", "("); drop a leading frame
("a close-up photo of"); the head phrase runs up to the first preposition, conjunction
or verb-like word; inside it, names (capitalized words after the first), numbers, codes
and possessives go; the last two remaining words are kept (English noun phrases end in
their head noun), with "a"/"an" before a singular noun.

strip_specifics() removes the same names, numbers and codes from a whole caption; a
retry feeds the LLM that version so it cannot copy them again.
"""

from __future__ import annotations

import re

from dftrain.generalize.cleaning import is_code, words

FALLBACK_CAPTION = "an image"

_CLAUSE_BREAK = re.compile(r"\s[|\u2013\u2014-]\s|[,;:(\[{|]|\s/\s")
_FRAME = re.compile(
    r"^(?:(?:a|an|the)\s+)?(?:(?:close[- ]?up|closeup|stock|high[- ]resolution|hd|4k|black\s+and\s+white|"
    r"aerial|vintage|old|digital|cute|beautiful)\s+)*"
    r"(?:photo(?:graph)?|image|picture|pic|illustration|drawing|painting|rendering|render|vector|shot|"
    r"view|snapshot|portrait|close[- ]?up|closeup|wallpaper|artwork|sketch|poster)s?"
    r"(?:\s+(?:of|showing|with|featuring|depicting))?\s+",
    re.IGNORECASE,
)
_DETERMINERS = {"a", "an", "the", "this", "that", "these", "those", "my", "our", "your", "his", "her", "their",
                "its", "some", "one", "two", "three", "four", "five", "several", "many", "new", "best", "top"}
# A head noun phrase ends before these.
_PHRASE_END = {
    "of", "in", "on", "at", "with", "by", "for", "from", "near", "under", "over", "behind", "above", "below",
    "into", "onto", "through", "across", "along", "against", "between", "during", "inside", "outside",
    "and", "or", "but", "while", "as", "that", "which", "who", "where", "when", "to", "is", "are", "was",
    "were", "being", "has", "have",
    "past", "around", "beside", "next", "parked", "covered", "made", "size", "sale", "vs", "x",
}
_ARTICLE_BEFORE_VOWEL = re.compile(r"^[aeio]|^u(?![ns]i|ni)", re.IGNORECASE)


def _first_clause(caption: str) -> str:
    return _CLAUSE_BREAK.split(caption, maxsplit=1)[0]


def _is_name(token: str, position: int) -> bool:
    # Capitalized words inside a phrase are names/brands; the first word may just start a sentence.
    return position > 0 and token[:1].isupper()


def _keep(token: str, position: int) -> bool:
    if is_code(token) or _is_name(token, position):
        return False
    if "'" in token or "\u2019" in token:  # possessives: "Obama's"
        return False
    return token.lower() not in _DETERMINERS


def _with_article(phrase: list[str]) -> str:
    head = phrase[-1]
    plural = head.endswith("s") and not head.endswith(("ss", "us", "is"))
    if plural:
        return " ".join(phrase)
    article = "an" if _ARTICLE_BEFORE_VOWEL.match(phrase[0]) else "a"
    return " ".join([article, *phrase])


def _ends_phrase(tokens: list[str], i: int) -> bool:
    token = tokens[i].lower()
    if token in _PHRASE_END:
        return True
    if token.endswith("ing") and len(token) > 4:
        # "running shoes" keeps the -ing word; "dog running in", "giving a speech" end there.
        nxt = tokens[i + 1] if i + 1 < len(tokens) else None
        return nxt is None or nxt.lower() in _PHRASE_END or nxt.lower() in _DETERMINERS or not _keep(nxt, i + 1)
    return False


def _phrases(tokens: list[str]) -> list[list[tuple[int, str]]]:
    """The tokens (with positions) split into noun-phrase-like runs at prepositions, verbs, ..."""
    runs: list[list[tuple[int, str]]] = [[]]
    for i, token in enumerate(tokens):
        if _ends_phrase(tokens, i):
            runs.append([])
        else:
            runs[-1].append((i, token))
    return [run for run in runs if run]


def head_phrase(caption: str) -> list[str]:
    """Words of the caption's head noun phrase with names, numbers and codes removed (maybe empty).

    The head phrase is the first run of words (between prepositions, conjunctions and
    verb-like words) that still has a word left once names, numbers and codes are gone.
    """
    text = _FRAME.sub("", _first_clause(caption).strip(), count=1)
    tokens = words(text)
    for run in _phrases(tokens):
        kept = [(i, t) for i, t in run if _keep(t, i)]
        # A capitalized first word followed by more capitalized words or by kept words is
        # a name or brand ("Barack Obama", "Nike running shoes"), not a sentence start.
        if kept and kept[0][0] == 0 and tokens[0][:1].isupper():
            follows_name = len(tokens) > 1 and tokens[1][:1].isupper()
            if follows_name or len(kept) > 1:
                kept = kept[1:]
        if kept:
            return [t.lower() for _, t in kept]
    return []


def rule_generalize(caption: str, *, max_words: int = 4, head_noun: str | None = None) -> str:
    """A short general caption derived from `caption` without a model; never empty.

    `head_noun` (the head of the caption's root noun chunk, from a parser: see faithful.py) is kept:
    when the word-list heuristic's phrase does not contain it, the result is that noun alone.
    """
    phrase = head_phrase(caption)
    phrase = [w.lower() for w in phrase[-2:]]
    if head_noun and head_noun.lower() not in phrase:
        phrase = [head_noun.lower()]
    if not phrase:
        return FALLBACK_CAPTION
    result = _with_article(phrase)
    parts = result.split()
    if len(parts) > max_words:
        result = " ".join(parts[-max_words:])
    return result


def strip_specifics(caption: str) -> str:
    """The caption without numbers, codes, possessive names and capitalized names (after the first word)."""
    kept = [t for i, t in enumerate(words(caption)) if not (is_code(t) or _is_name(t, i) or "'" in t)]
    return " ".join(kept)
