"""What the score needs from one spaCy Doc: token, entity, noun and verb counts.

Token rule (documented in docs/score.md): punctuation and whitespace
tokens do not count, so "a dog." and "a dog" score the same. Every other token
(words, numbers, symbols, emoji) counts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

NOUN_TAGS = frozenset({"NN", "NNS", "NNP", "NNPS"})  # Penn "NN*"
VERB_POS = frozenset({"VERB", "AUX"})  # auxiliaries and modals carry tense and mood in English


@dataclass
class CaptionFeatures:
    n_tokens: int = 0
    n_specific: int = 0  # tokens in a named entity or numerals, each counted once
    nouns: list[str] = field(default_factory=list)  # lower-cased noun tokens, in order
    verb_flags: list[bool] = field(default_factory=list)  # per verb: Tense=Pres or Mood=Ind


def counts_as_token(token) -> bool:
    return not (token.is_punct or token.is_space)


def is_numeral(token) -> bool:
    return token.pos_ == "NUM" or token.tag_ == "CD"


def is_present_or_indicative(token) -> bool:
    morph = token.morph
    return "Pres" in morph.get("Tense") or "Ind" in morph.get("Mood")


def extract_features(doc) -> CaptionFeatures:
    features = CaptionFeatures()
    for token in doc:
        if not counts_as_token(token):
            continue
        features.n_tokens += 1
        if token.ent_type_ or is_numeral(token):
            features.n_specific += 1
        if token.tag_ in NOUN_TAGS:
            features.nouns.append(token.lower_)
        if token.pos_ in VERB_POS:
            features.verb_flags.append(is_present_or_indicative(token))
    return features
