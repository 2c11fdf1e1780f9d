"""What the score needs from one spaCy Doc: token, entity, noun and verb counts.

Two token rules (`tokens=`, documented in docs/score.md):

- `paper` (default), as the paper's generality.py counts: the specificity denominator is
  len(doc), every spaCy token (punctuation and whitespace tokens included); the specific tokens
  are the entity tokens that are not POS NUM plus every POS NUM token; the broadness denominator
  is the number of word-tokenizer tokens (punctuation included, never whitespace: NLTK's
  word_tokenize there, spaCy's non-whitespace tokens here); verbs are POS VERB only, and one
  counts as present/indicative when its Tense is exactly ["Pres"] or its Mood exactly ["Ind"].
- `dftrain`: punctuation and whitespace tokens do not count anywhere (so "a dog." scores as
  "a dog"); a numeral is POS NUM or tag CD; verbs are VERB and AUX (auxiliaries and modals carry
  tense and mood in English: "is running", "will sleep").

In both, nouns are the tokens tagged NN* (spaCy's tags stand in for NLTK's perceptron tagger,
whose data cannot be installed offline).
"""

from __future__ import annotations

from dataclasses import dataclass, field

TOKEN_RULES = ("paper", "dftrain")
NOUN_TAGS = frozenset({"NN", "NNS", "NNP", "NNPS"})  # Penn "NN*"
VERB_POS = {"paper": frozenset({"VERB"}), "dftrain": frozenset({"VERB", "AUX"})}


@dataclass
class CaptionFeatures:
    n_tokens: int = 0  # specificity denominator
    n_specific: int = 0  # tokens in a named entity or numerals, each counted once
    n_words: int = 0  # broadness denominator
    nouns: list[str] = field(default_factory=list)  # lower-cased noun tokens, in order
    verb_flags: list[bool] = field(default_factory=list)  # per verb: present tense or indicative mood


def counts_as_token(token) -> bool:
    return not (token.is_punct or token.is_space)


def is_present_or_indicative(token, tokens: str = "paper") -> bool:
    morph = token.morph
    if tokens == "paper":  # verb.morph.get('Tense') == ['Pres'] or verb.morph.get('Mood') == ['Ind']
        return morph.get("Tense") == ["Pres"] or morph.get("Mood") == ["Ind"]
    return "Pres" in morph.get("Tense") or "Ind" in morph.get("Mood")


def extract_features(doc, tokens: str = "paper") -> CaptionFeatures:
    if tokens not in TOKEN_RULES:
        raise ValueError(f"tokens must be one of {TOKEN_RULES}, got {tokens!r}")
    features = CaptionFeatures()
    verbs = VERB_POS[tokens]
    for token in doc:
        if tokens == "paper":
            features.n_tokens += 1
            features.n_words += not token.is_space
            specific = bool(token.ent_type_) or token.pos_ == "NUM"
        else:
            if not counts_as_token(token):
                continue
            features.n_tokens += 1
            features.n_words += 1
            specific = bool(token.ent_type_) or token.pos_ == "NUM" or token.tag_ == "CD"
        features.n_specific += specific
        if token.tag_ in NOUN_TAGS:
            features.nouns.append(token.lower_)
        if token.pos_ in verbs:
            features.verb_flags.append(is_present_or_indicative(token, tokens))
    return features
