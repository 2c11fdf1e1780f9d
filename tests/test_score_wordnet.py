"""WordNet root preparation, the global statistics and their on-disk cache."""

import json

import pytest

from dftrain.errors import MissingDependencyError
from dftrain.score import wordnet


def test_lexnames_has_the_45_wordnet_30_files():
    lines = wordnet.lexnames_text().splitlines()
    assert len(lines) == 45
    assert lines[0].split() == ["00", "adj.all", "3"]
    assert lines[3].split() == ["03", "noun.Tops", "1"]
    assert lines[44].split() == ["44", "adj.ppl", "3"]
    assert all(int(line.split()[0]) == i for i, line in enumerate(lines))


def test_missing_wordnet_names_the_packages(tmp_path):
    with pytest.raises(MissingDependencyError) as info:
        wordnet.prepare_nltk_root(source_dir=tmp_path / "nothing", target_root=tmp_path / "root")
    assert "wordnet-base" in str(info.value) and "NLTK_DATA" in str(info.value)


class _FakeSynset:
    def __init__(self, offset, hyponyms, depth):
        self._offset, self._hyponyms, self._depth = offset, hyponyms, depth

    def offset(self):
        return self._offset

    def hyponyms(self):
        return [None] * self._hyponyms

    def min_depth(self):
        return self._depth


class _FakeReader:
    def __init__(self):
        self.passes = 0

    def all_synsets(self, pos):
        assert pos == "n"
        self.passes += 1
        return iter([_FakeSynset(100, 3, 2), _FakeSynset(200, 0, 4), _FakeSynset(300, 1, 6)])


INDEX_NOUN = """  1 This software and database is being provided to you, the LICENSEE, by
dog n 2 3 @ ~ #m 2 1 00000100 00000200
mouse n 1 1 @ 1 0 00000300
cat n 1 0 1 0 00000200
"""


def _fake_root(tmp_path, payload=b"noun data"):
    corpus = tmp_path / "root" / "corpora" / "wordnet"
    corpus.mkdir(parents=True)
    (corpus / "data.noun").write_bytes(payload)
    (corpus / "index.noun").write_text(INDEX_NOUN)
    (corpus / "noun.exc").write_text("mice mouse\n")
    return tmp_path / "root"


@pytest.fixture
def fake_reader(monkeypatch):
    reader = _FakeReader()
    monkeypatch.setattr(wordnet, "load_reader", lambda root: reader)
    return reader


def test_index_parsing_takes_the_first_offset(tmp_path):
    root = _fake_root(tmp_path)
    first = wordnet.parse_first_offsets(root / "corpora" / "wordnet" / "index.noun")
    assert first == {"dog": 100, "mouse": 300, "cat": 200}


def test_noun_table_and_morphy_rules():
    lexicon = wordnet.NounLexicon({"dog": (18, 8), "mouse": (2, 9), "box": (5, 7), "wolf": (1, 9)},
                                  {"mice": ["mouse"]})  # fmt: skip
    assert lexicon.lookup("Dogs") == (18, 8)  # lower-cased, "s" rule
    assert lexicon.lookup("mice") == (2, 9)  # exception list
    assert lexicon.lookup("boxes") == (5, 7)  # "xes" rule
    assert lexicon.lookup("wolves") == (1, 9)  # "ves" rule
    assert lexicon.lookup("zzzq") is None


def test_stats_computed_once_then_read_from_cache(tmp_path, fake_reader):
    root, cache = _fake_root(tmp_path), tmp_path / "stats.json"
    first, lexicon = wordnet.load_wordnet(root, cache)
    assert (first.noun_synsets, first.summed_hyponyms, first.mean_min_depth) == (3, 4, 4.0)
    assert first.hyponym_scale == pytest.approx(4 / 30000)
    assert lexicon.lookup("dogs") == (3, 2) and lexicon.lookup("mice") == (1, 6)
    second, lexicon2 = wordnet.load_wordnet(root, cache)
    assert fake_reader.passes == 1 and second == first
    assert lexicon2.table == lexicon.table


def test_stale_or_corrupt_cache_is_recomputed(tmp_path, fake_reader):
    root, cache = _fake_root(tmp_path), tmp_path / "stats.json"
    wordnet.load_wordnet(root, cache)
    (root / "corpora" / "wordnet" / "data.noun").write_bytes(b"another wordnet")  # new fingerprint
    wordnet.load_wordnet(root, cache)
    assert fake_reader.passes == 2
    cache.write_text("{not json", encoding="utf-8")
    wordnet.load_wordnet(root, cache)
    assert fake_reader.passes == 3
    assert json.loads(cache.read_text())["stats"]["noun_synsets"] == 3
