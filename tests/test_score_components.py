"""Pure component math, computed by hand (no spaCy, no WordNet)."""

import pytest

from dftrain.score import components as comp


def test_specificity_by_hand():
    assert comp.specificity(10, 3) == pytest.approx(7.0)
    assert comp.specificity(6, 4) == pytest.approx(10 / 3)
    assert comp.specificity(4, 0) == 10.0
    assert comp.specificity(4, 4) == 0.0
    assert comp.specificity(0, 0) == comp.EMPTY_SPECIFICITY == 10.0


def test_broadness_by_hand():
    # (18 + 0) / 5 words = 3.6 ; A = 2.5 -> 2A = 5 -> 3.6 / 5 * 10 = 7.2
    assert comp.broadness([18, 0], 5, 2.5) == pytest.approx(7.2)
    assert comp.broadness([100], 2, 2.5) == 10.0  # clipped
    assert comp.broadness([0, 0], 4, 2.5) == 0.0
    assert comp.broadness([], 4, 2.5) == comp.NO_NOUN_BROADNESS == 0.0


def test_tense_modality_by_hand():
    assert comp.tense_modality([True, False, False, True]) == pytest.approx(5.0)
    assert comp.tense_modality([False, False, False]) == 0.0
    assert comp.tense_modality([True]) == 10.0
    assert comp.tense_modality([]) == comp.NO_VERB_TENSE_MODALITY == 5.0


def test_abstraction_by_hand_and_reversed():
    # mean depth (8 + 4) / 2 = 6 ; D = 8 -> 2D = 16 -> 6 / 16 * 10 = 3.75
    assert comp.abstraction([8, 4], 8.0) == pytest.approx(3.75)
    assert comp.abstraction([8, 4], 8.0, reversed_=True) == pytest.approx(6.25)
    assert comp.abstraction([], 8.0) == pytest.approx(5.0)  # "D itself" when no noun is in WordNet
    assert comp.abstraction([], 8.0, reversed_=True) == pytest.approx(5.0)
    assert comp.abstraction([40], 8.0) == 10.0 and comp.abstraction([40], 8.0, reversed_=True) == 0.0


def test_generality_is_the_mean():
    values = {"specificity": 10.0, "broadness": 2.0, "tense_modality": 5.0, "abstraction": 3.0}
    assert comp.generality(values) == pytest.approx(5.0)


def test_map_range_rejects_bad_scale():
    with pytest.raises(ValueError):
        comp.map_range(1.0, 0.0)
