"""The four components of the generality score and their mean: pure functions.

Every component is in [0, 10], 0 = specific, 10 = general (paper: arXiv 2309.07254).
Inputs are counts already extracted from a caption (see features.py), so these
functions are exact and testable by hand.
"""

from __future__ import annotations

from collections.abc import Sequence

SCALE = 10.0
COMPONENTS = ("specificity", "broadness", "tense_modality", "abstraction")
SCORE_KEYS = (*COMPONENTS, "generality")

# Defined values where a component's ratio has no denominator.
EMPTY_SPECIFICITY = 10.0  # no token: nothing specific is said
NO_NOUN_BROADNESS = 0.0  # issue: "0 when there is no noun"
NO_VERB_TENSE_MODALITY = 5.0  # issue: "5.0 when there is no verb"


def clip(value: float, low: float = 0.0, high: float = SCALE) -> float:
    return min(max(value, low), high)


def map_range(value: float, upper: float) -> float:
    """Linear map of (0, upper) onto (0, 10), clipped to [0, 10]."""
    if upper <= 0:
        raise ValueError(f"scale must be positive, got {upper}")
    return clip(value / upper * SCALE)


def specificity(n_tokens: int, n_specific: int) -> float:
    """(1 - specific tokens / tokens) * 10, clipped at 0.

    n_specific counts tokens inside named entities that are not numerals plus
    numeral tokens (each token at most once). No token: EMPTY_SPECIFICITY.
    """
    if n_tokens <= 0:
        return EMPTY_SPECIFICITY
    return clip((1.0 - n_specific / n_tokens) * SCALE)


def broadness(hyponym_counts: Sequence[int], n_words: int, hyponym_scale: float) -> float:
    """Summed hyponym counts of the nouns / words, mapped from (0, 2A) to (0, 10).

    hyponym_counts has one entry per noun (0 for a noun WordNet does not know);
    hyponym_scale is A. No noun: NO_NOUN_BROADNESS.
    """
    if not hyponym_counts or n_words <= 0:
        return NO_NOUN_BROADNESS
    return map_range(sum(hyponym_counts) / n_words, 2.0 * hyponym_scale)


def tense_modality(verb_is_present_or_indicative: Sequence[bool]) -> float:
    """10 * (verbs with Tense=Pres or Mood=Ind) / verbs. No verb: NO_VERB_TENSE_MODALITY."""
    if not verb_is_present_or_indicative:
        return NO_VERB_TENSE_MODALITY
    return SCALE * sum(map(bool, verb_is_present_or_indicative)) / len(verb_is_present_or_indicative)


def abstraction(min_depths: Sequence[int], depth_scale: float, reversed_: bool = False) -> float:
    """Mean min_depth of the nouns' first synsets, mapped from (0, 2D) to (0, 10).

    No noun found in WordNet: the mean is taken to be D itself (score 5.0).
    As defined in the paper, deeper (more specific) nouns RAISE this value; with
    reversed_=True the map is (2D - depth), so deeper nouns lower it (= 10 - paper).
    """
    mean_depth = sum(min_depths) / len(min_depths) if min_depths else depth_scale
    if reversed_:
        mean_depth = 2.0 * depth_scale - mean_depth
    return map_range(mean_depth, 2.0 * depth_scale)


def generality(components: dict[str, float]) -> float:
    """The mean of the four components."""
    return sum(components[name] for name in COMPONENTS) / len(COMPONENTS)
