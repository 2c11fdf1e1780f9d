"""Caption generality scorer: spaCy features + WordNet look-ups -> the four components.

from dftrain.score import load_scorer
scorer = load_scorer()                      # spaCy model + WordNet, global stats from cache (tokens="paper")
scorer.score("a dog on a beach")            # {"caption", "specificity", ..., "generality"}
scorer.score_many(captions)                 # deduplicated, batched, input order kept
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

from dftrain.errors import ConfigError, DftrainError
from dftrain.score import components as comp
from dftrain.score.features import TOKEN_RULES, CaptionFeatures, extract_features

log = logging.getLogger("dftrain.score")

ABSTRACTION_MODES = ("paper", "reversed")
# Longer captions are cut before spaCy (LAION captions are < 1,000 characters; a
# 100 kB "caption" is junk and would only cost memory). Documented in the README.
MAX_CHARS = 20_000
DEFAULT_BATCH_SIZE = 256
DIGITS = 4  # output rounding


class Scorer:
    """Scores captions; one instance per process (it holds a spaCy pipeline)."""

    def __init__(
        self, nlp, lexicon, stats, *, abstraction: str = "paper", tokens: str = "paper",
        batch_size: int = DEFAULT_BATCH_SIZE,
    ):
        if abstraction not in ABSTRACTION_MODES:
            raise ConfigError(f"abstraction must be one of {ABSTRACTION_MODES}, got {abstraction!r}")
        if tokens not in TOKEN_RULES:
            raise ConfigError(f"tokens must be one of {TOKEN_RULES}, got {tokens!r}")
        self.tokens = tokens
        self.nlp = nlp
        self.lexicon = lexicon
        self.stats = stats
        self.abstraction = abstraction
        self.batch_size = batch_size

    # -- components from features (no spaCy) -------------------------------------------------
    def components(self, features: CaptionFeatures) -> dict[str, float]:
        lookups = [self.lexicon.lookup(noun) for noun in features.nouns]
        hyponyms = [found[0] if found else 0 for found in lookups]
        depths = [found[1] for found in lookups if found]
        values = {
            "specificity": comp.specificity(features.n_tokens, features.n_specific),
            "broadness": comp.broadness(hyponyms, features.n_words, self.stats.hyponym_scale),
            "tense_modality": comp.tense_modality(features.verb_flags),
            "abstraction": comp.abstraction(
                depths, self.stats.depth_scale, reversed_=self.abstraction == "reversed"
            ),
        }
        values["generality"] = comp.generality(values)
        return values

    # -- public API ----------------------------------------------------------------------
    def score_many(self, captions: Sequence[str]) -> list[dict]:
        """One dict per caption (keys: caption + SCORE_KEYS), in input order; duplicates scored once."""
        for index, caption in enumerate(captions):
            if not isinstance(caption, str):
                raise DftrainError(f"caption #{index} is {type(caption).__name__}, not text")
        unique = list(dict.fromkeys(captions))
        by_caption = dict(zip(unique, self._score_unique(unique), strict=True))
        return [{"caption": caption, **by_caption[caption]} for caption in captions]

    def score(self, caption: str) -> dict:
        return self.score_many([caption])[0]

    def _score_unique(self, captions: Sequence[str]) -> Iterable[dict[str, float]]:
        texts = (caption[:MAX_CHARS] for caption in captions)
        for doc in self.nlp.pipe(texts, batch_size=self.batch_size):
            values = self.components(extract_features(doc, self.tokens))
            yield {key: round(values[key], DIGITS) for key in comp.SCORE_KEYS}


def load_scorer(
    spacy_model: str | None = None,
    abstraction: str = "paper",
    *,
    tokens: str = "paper",
    keep_parser: bool = False,
    wordnet_source: str | Path | None = None,
    nltk_root: str | Path | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> Scorer:
    """Load spaCy and WordNet (cached per process) and the global WordNet statistics (cached on disk).

    Raises MissingDependencyError (with what to install) when the spaCy model or WordNet is missing.
    """
    if abstraction not in ABSTRACTION_MODES:
        raise ConfigError(f"--abstraction must be one of {ABSTRACTION_MODES}, got {abstraction!r}")
    if tokens not in TOKEN_RULES:
        raise ConfigError(f"--tokens must be one of {TOKEN_RULES}, got {tokens!r}")
    from dftrain.score import nlp as nlp_mod
    from dftrain.score import wordnet

    root = wordnet.prepare_nltk_root(
        Path(wordnet_source) if wordnet_source else None, Path(nltk_root) if nltk_root else None
    )
    stats, lexicon = _wordnet_for(root)
    nlp = nlp_mod.load_pipeline(spacy_model, keep_parser)
    return Scorer(nlp, lexicon, stats, abstraction=abstraction, tokens=tokens, batch_size=batch_size)


# Per process: (root, fingerprint) -> (stats, lexicon), so that the noun table and the
# look-up cache are shared by every scorer of this process.
_WORDNET: dict[tuple[str, str], tuple] = {}


def _wordnet_for(root: Path):
    from dftrain.score import wordnet

    key = (str(root), wordnet.fingerprint(Path(root) / "corpora" / "wordnet"))
    if key not in _WORDNET:
        _WORDNET[key] = wordnet.load_wordnet(root)
    return _WORDNET[key]


def forget_loaded_wordnet() -> None:
    """Drop this process's loaded WordNet table (the next load_scorer reads the disk cache again)."""
    _WORDNET.clear()
