"""The score against the paper's generality.py (github.com/HowardLi0816/dual-fusion-diffusion), by hand.

For each caption the counts below were read off spaCy's analysis by hand and follow that code:
  specificity    = (1 - (entity tokens that are not NUM + NUM tokens) / len(doc)) * 10, clipped at 0
  broadness      = np.interp(sum(first-synset hyponyms of the NN* words) / len(words), (0, 2A), (0, 10))
  tense_modality = 10 * (VERB tokens with Tense == ['Pres'] or Mood == ['Ind']) / VERB tokens, 5 if none
  abstraction    = np.interp(mean first-synset min_depth of the NN* words, (0, 2D), (0, 10)), D if none
len(doc) counts every spaCy token (punctuation and whitespace too); len(words) counts the word
tokenizer's tokens, punctuation included, never whitespace (spaCy's tokens stand in for NLTK's, and
spaCy's NN* tags for NLTK's perceptron tagger). `--tokens dftrain` ignores punctuation and whitespace
and counts AUX as verbs: its counts are in the second column set.
"""

import numpy as np
import pytest
from score_helpers import score_cache_dir  # noqa: F401 (fixture)

from dftrain.score import load_scorer, wordnet

# caption: (paper: len(doc), specific, len(words), dftrain: tokens, specific), nouns, (paper verbs, dftrain verbs)
TABLE = {
    "a dog, on a beach!": ((7, 0, 7), (5, 0), ["dog", "beach"], ([], [])),
    "Barack Obama visited Paris in 2009.": ((7, 4, 7), (6, 4), ["barack", "obama", "paris"], ([False], [False])),
    # Coca - Cola Classic 330ml are one ORG entity (5 tokens with the hyphen), 24 is NUM
    "Coca-Cola Classic 330ml can, 24 pack": (
        (9, 6, 9), (7, 5), ["coca", "cola", "classic", "330ml", "can", "pack"], ([], [])),
    # have (Pres, Ind) and been (Past) are AUX: only the paper's rule leaves them out
    "The children have been playing in the park": (
        (8, 0, 8), (8, 0), ["children", "park"], ([True], [True, False, True])),
    # the second space is a whitespace token: in len(doc), not in len(words)
    "a red  bag": ((4, 0, 3), (3, 0), ["bag"], ([], [])),
    "Nike shoes (size 10) - black": ((8, 2, 8), (5, 2), ["nike", "shoes", "size"], ([], [])),
    "A dog is running on the beach.": ((8, 0, 8), (7, 0), ["dog", "beach"], ([True], [True, True])),
    "The cat sat and will sleep.": ((7, 0, 7), (6, 0), ["cat"], ([False, False], [False, False, False])),
}


@pytest.fixture(scope="module")
def wordnet_reader(score_cache_dir):  # noqa: F811 (fixture from score_helpers)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DFTRAIN_CACHE", str(score_cache_dir))
        mp.delenv("NLTK_DATA", raising=False)
        yield wordnet.load_reader(str(wordnet.prepare_nltk_root()))


@pytest.fixture(scope="module")
def scorers(wordnet_reader):
    return {"paper": load_scorer(), "dftrain": load_scorer(tokens="dftrain")}


def paper_components(reader, constants, n_doc, n_specific, n_words, nouns, verb_flags):
    """The four values as generality.py computes them, from the hand counts and NLTK's WordNet."""
    hyponym_avg, average_depth = constants
    synsets = [reader.synsets(noun, "n") for noun in nouns]
    specificity = max((1 - n_specific / n_doc) * 10, 0)
    broadness = 0.0
    if nouns:
        broadness = float(np.interp(sum(len(s[0].hyponyms()) for s in synsets if s) / n_words,
                                    (0, hyponym_avg * 2), (0, 10)))
    tense = 5.0 if not verb_flags else 10.0 * sum(verb_flags) / len(verb_flags)
    depths = [s[0].min_depth() for s in synsets if s]
    abstraction = float(np.interp(sum(depths) / len(depths) if depths else average_depth,
                                  (0, average_depth * 2), (0, 10)))
    return {"specificity": specificity, "broadness": broadness, "tense_modality": tense, "abstraction": abstraction}


@pytest.fixture(scope="module")
def expected(wordnet_reader, scorers):
    # get_hyponym_avg(): WordNet 3.0's 75,850 noun hyponyms / 30000; all_avg_depth(): the mean noun
    # min_depth (7.955; both checked against NLTK in test_score_scorer.py, a full walk takes ~20 s).
    constants = (75850 / 30000, scorers["paper"].stats.depth_scale)
    out = {}
    for caption, (paper, ours, nouns, (paper_verbs, our_verbs)) in TABLE.items():
        out[caption] = {
            "paper": paper_components(wordnet_reader, constants, paper[0], paper[1], paper[2], nouns, paper_verbs),
            "dftrain": paper_components(wordnet_reader, constants, ours[0], ours[1], ours[0], nouns, our_verbs),
        }
    return out


@pytest.mark.parametrize("tokens", ["paper", "dftrain"])
@pytest.mark.parametrize("caption", list(TABLE))
def test_components_follow_the_papers_code(scorers, expected, caption, tokens):
    row = scorers[tokens].score(caption)
    want = expected[caption][tokens]
    for key, value in want.items():
        assert row[key] == pytest.approx(value, abs=1e-4), (key, row[key], value)
    assert row["generality"] == pytest.approx(sum(want.values()) / 4, abs=2e-4)


def test_hand_values_of_the_table(scorers):
    """A few values written out, so that the table is checked against numbers and not only code."""
    paper, ours = scorers["paper"], scorers["dftrain"]
    assert paper.score("Barack Obama visited Paris in 2009.")["specificity"] == pytest.approx(30 / 7, abs=1e-4)
    assert ours.score("Barack Obama visited Paris in 2009.")["specificity"] == pytest.approx(10 / 3, abs=1e-4)
    assert paper.score("Coca-Cola Classic 330ml can, 24 pack")["specificity"] == pytest.approx(10 / 3, abs=1e-4)
    assert ours.score("Coca-Cola Classic 330ml can, 24 pack")["specificity"] == pytest.approx(20 / 7, abs=1e-4)
    assert paper.score("The children have been playing in the park")["tense_modality"] == 10.0
    assert ours.score("The children have been playing in the park")["tense_modality"] == pytest.approx(20 / 3, abs=1e-4)
    # punctuation dilutes broadness under the paper's rule only: 2 nouns over 7 tokens instead of 5
    p, o = paper.score("a dog, on a beach!")["broadness"], ours.score("a dog, on a beach!")["broadness"]
    assert p == pytest.approx(o * 5 / 7, abs=1e-3)


def test_the_spacy_analysis_matches_the_hand_counts(scorers):
    """The counts in TABLE are what the installed spaCy model says (a model update would show here)."""
    from dftrain.score.features import extract_features

    for caption, (paper, ours, nouns, (paper_verbs, our_verbs)) in TABLE.items():
        doc = scorers["paper"].nlp(caption)
        f = extract_features(doc, "paper")
        assert (f.n_tokens, f.n_specific, f.n_words, f.nouns, f.verb_flags) == (*paper, nouns, paper_verbs), caption
        g = extract_features(doc, "dftrain")
        assert (g.n_tokens, g.n_specific, g.nouns, g.verb_flags) == (*ours, nouns, our_verbs), caption
