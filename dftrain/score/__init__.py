"""Caption generality score (arXiv 2309.07254): spaCy + WordNet, and an LLM-judged variant.

from dftrain.score import load_scorer
scorer = load_scorer(spacy_model=None, abstraction="paper")
scorer.score_many(["a dog on a beach", "Nike Air Max 270 in 2019"])
"""

from dftrain.score.components import COMPONENTS, SCORE_KEYS
from dftrain.score.scorer import ABSTRACTION_MODES, Scorer, load_scorer

__all__ = ["ABSTRACTION_MODES", "COMPONENTS", "SCORE_KEYS", "Scorer", "load_scorer"]
