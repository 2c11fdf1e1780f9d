"""WordNet 3.0 for the generality score: locate it, read it with NLTK, cache its statistics.

NLTK's WordNetCorpusReader wants the database files as real copies (it refuses
symlinks) under <root>/corpora/wordnet, plus a `lexnames` file that Debian's
`wordnet-base` package does not ship. We prepare that root once in
dftrain's cache (or use an NLTK_DATA root that already has WordNet) and never
call nltk.download: nothing is fetched at run time.

The two global constants of the score (A = summed noun hyponyms / 30000 and
D = mean noun min_depth) need a pass over all 82,115 noun synsets (~5-10 s), so
they are cached on disk in JSON keyed by a fingerprint of the WordNet files. The
same pass stores, for every noun lemma, the hyponym count and min_depth of its
first synset; per-word look-ups then read that table (with NLTK's noun morphy
rules re-applied, see NounLexicon) instead of loading NLTK's reader, which takes
~3 s per process and would dominate start-up and every worker's start.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import warnings
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

from dftrain.errors import MissingDependencyError
from dftrain.files import atomic_path, atomic_write_text
from dftrain.paths import cache_dir

log = logging.getLogger("dftrain.score")

DEBIAN_WORDNET_DIR = Path("/usr/share/wordnet")
INSTALL_HINT = (
    "install the Debian packages (apt-get install wordnet-base wordnet-sense-index), "
    "or set NLTK_DATA to a directory that has corpora/wordnet (WordNet 3.0 with lexnames)"
)

# The files NLTK's WordNetCorpusReader opens (lexnames is written by us).
DATABASE_FILES = (
    "cntlist.rev",
    "index.sense",
    "index.adj",
    "index.adv",
    "index.noun",
    "index.verb",
    "data.adj",
    "data.adv",
    "data.noun",
    "data.verb",
    "adj.exc",
    "adv.exc",
    "noun.exc",
    "verb.exc",
)

# WordNet 3.0 lexicographer files, in file-number order (00-44); the last column of
# `lexnames` is the syntactic category (1 noun, 2 verb, 3 adjective, 4 adverb).
LEXICOGRAPHER_FILES = (
    "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact",
    "noun.attribute", "noun.body", "noun.cognition", "noun.communication", "noun.event",
    "noun.feeling", "noun.food", "noun.group", "noun.location", "noun.motive", "noun.object",
    "noun.person", "noun.phenomenon", "noun.plant", "noun.possession", "noun.process",
    "noun.quantity", "noun.relation", "noun.shape", "noun.state", "noun.substance", "noun.time",
    "verb.body", "verb.change", "verb.cognition", "verb.communication", "verb.competition",
    "verb.consumption", "verb.contact", "verb.creation", "verb.emotion", "verb.motion",
    "verb.perception", "verb.possession", "verb.social", "verb.stative", "verb.weather", "adj.ppl",
)  # fmt: skip
_CATEGORY = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}

# The paper's normalisation: A = (hyponyms summed over all noun synsets) / 30000.
HYPONYM_DIVISOR = 30000.0
STATS_VERSION = 2


def lexnames_text() -> str:
    """The `lexnames` file NLTK expects: "NN<TAB>name<TAB>category" per line."""
    return "".join(
        f"{i:02d}\t{name}\t{_CATEGORY[name.split('.')[0]]}\n" for i, name in enumerate(LEXICOGRAPHER_FILES)
    )


def _has_wordnet(corpus_dir: Path) -> bool:
    return all((corpus_dir / name).is_file() for name in ("lexnames", "data.noun", "index.noun"))


def _nltk_data_root_from_env() -> Path | None:
    """An NLTK_DATA entry that already holds corpora/wordnet, if any."""
    for entry in os.environ.get("NLTK_DATA", "").split(os.pathsep):
        if entry and _has_wordnet(Path(entry).expanduser() / "corpora" / "wordnet"):
            return Path(entry).expanduser().resolve()
    return None


def prepare_nltk_root(source_dir: Path | None = None, target_root: Path | None = None) -> Path:
    """Return an NLTK data root holding corpora/wordnet, preparing it on first use.

    Order: an NLTK_DATA root that already has WordNet; else copies of the Debian
    files (source_dir, default /usr/share/wordnet) in target_root (default
    dftrain's cache dir "nltk_data"), with `lexnames` added.
    """
    if source_dir is None and target_root is None:
        env_root = _nltk_data_root_from_env()
        if env_root is not None:
            return env_root
    source = Path(source_dir) if source_dir is not None else DEBIAN_WORDNET_DIR
    missing = [name for name in DATABASE_FILES if not (source / name).is_file()]
    if missing:
        raise MissingDependencyError(
            f"WordNet 3.0 not found ({source} lacks {', '.join(missing[:3])}"
            f"{'...' if len(missing) > 3 else ''}): {INSTALL_HINT}"
        )
    root = Path(target_root) if target_root is not None else cache_dir("nltk_data")
    corpus = root / "corpora" / "wordnet"
    corpus.mkdir(parents=True, exist_ok=True)
    for name in DATABASE_FILES:
        src, dst = source / name, corpus / name
        # Real copies, refreshed when the source changes size (a package upgrade).
        if dst.is_symlink() or not dst.is_file() or dst.stat().st_size != src.stat().st_size:
            if dst.is_symlink():
                dst.unlink()
            # several worker processes may prepare the root at once: nobody reads a half-written file
            with atomic_path(dst) as tmp:
                shutil.copyfile(src, tmp)
    lexnames = corpus / "lexnames"
    if not lexnames.is_file() or lexnames.read_text(encoding="utf-8") != lexnames_text():
        atomic_write_text(lexnames, lexnames_text())
    return root.resolve()


@lru_cache(maxsize=4)
def load_reader(root: str):
    """NLTK's WordNetCorpusReader on <root>/corpora/wordnet (once per process and root).

    Only needed to build the cached noun table, and by tests that compare with NLTK.
    """
    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    # NLTK only opens files under its allowed data roots (nltk.data.path / NLTK_DATA).
    if root not in [str(p) for p in nltk.data.path]:
        nltk.data.path.insert(0, root)
    with warnings.catch_warnings():
        # "multilingual functions are not available": we only need English WordNet.
        warnings.simplefilter("ignore")
        try:
            return WordNetCorpusReader(os.path.join(root, "corpora", "wordnet"), None)
        except (OSError, LookupError, AssertionError, ValueError) as exc:
            raise MissingDependencyError(f"cannot read WordNet under {root}: {exc}; {INSTALL_HINT}") from exc


NOUN_SUBSTITUTIONS = (
    # NLTK's MORPHOLOGICAL_SUBSTITUTIONS[NOUN], in its order (the order decides the first synset).
    ("s", ""),
    ("ses", "s"),
    ("ves", "f"),
    ("xes", "x"),
    ("zes", "z"),
    ("ches", "ch"),
    ("shes", "sh"),
    ("men", "man"),
    ("ies", "y"),
)
FINGERPRINT_FILES = ("data.noun", "index.noun", "noun.exc")


def fingerprint(corpus_dir: Path) -> str:
    """sha256 over the noun database files: changes whenever WordNet's nouns change."""
    digest = hashlib.sha256()
    for name in FINGERPRINT_FILES:
        digest.update(name.encode())
        with open(corpus_dir / name, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def parse_first_offsets(index_file: Path) -> dict[str, int]:
    """lemma -> offset of its first (most frequent) synset, from a WordNet index file.

    Line format: lemma pos synset_cnt p_cnt [ptr_symbol x p_cnt] sense_cnt tagsense_cnt offset...
    License lines start with a space.
    """
    first: dict[str, int] = {}
    with open(index_file, encoding="utf-8") as fh:
        for line in fh:
            if line.startswith(" "):
                continue
            fields = line.split()
            n_pointers = int(fields[3])
            first[fields[0]] = int(fields[4 + n_pointers + 2])
    return first


def parse_exceptions(exc_file: Path) -> dict[str, list[str]]:
    """Irregular form -> base forms (noun.exc: "mice mouse")."""
    exceptions: dict[str, list[str]] = {}
    with open(exc_file, encoding="utf-8") as fh:
        for line in fh:
            terms = line.split()
            if terms:
                exceptions[terms[0]] = terms[1:]
    return exceptions


@dataclass(frozen=True)
class WordNetStats:
    """Global noun statistics that fix the score's scales."""

    noun_synsets: int
    summed_hyponyms: int
    mean_min_depth: float
    fingerprint: str

    @property
    def hyponym_scale(self) -> float:
        """A = summed noun hyponyms / 30000 (broadness maps (0, 2A) to (0, 10))."""
        return self.summed_hyponyms / HYPONYM_DIVISOR

    @property
    def depth_scale(self) -> float:
        """D = mean min_depth of all noun synsets (abstraction maps (0, 2D) to (0, 10))."""
        return self.mean_min_depth


def compute_noun_statistics(
    reader, first_offsets: dict[str, int], fingerprint_value: str = ""
) -> tuple[WordNetStats, dict[str, tuple[int, int]]]:
    """One pass over all noun synsets (slow: seconds): the global statistics and the per-lemma table.

    Hyponyms are direct hyponyms() (instance hyponyms excluded), as in the paper's count.
    """
    per_offset: dict[int, tuple[int, int]] = {}
    for synset in reader.all_synsets("n"):
        per_offset[synset.offset()] = (len(synset.hyponyms()), synset.min_depth())
    count = len(per_offset)
    stats = WordNetStats(
        count,
        sum(h for h, _ in per_offset.values()),
        sum(d for _, d in per_offset.values()) / count,
        fingerprint_value,
    )
    table = {lemma: per_offset[offset] for lemma, offset in first_offsets.items() if offset in per_offset}
    return stats, table


class NounLexicon:
    """Per-word look-ups: (hyponym count, min_depth) of the word's first WordNet noun synset.

    Reproduces NLTK's `wn.synsets(word, pos="n")[0]`: lower-case the word; candidate
    forms are the word itself followed by its exception-list bases (noun.exc) or, if it
    has none, the noun suffix rules applied once; the first candidate that is a noun
    lemma gives the synset. (tests/test_score_wordnet.py checks agreement with NLTK.)
    Results are cached in memory per word.
    """

    def __init__(self, table: dict[str, tuple[int, int]], exceptions: dict[str, list[str]]) -> None:
        self.table = table
        self.exceptions = exceptions
        # Bounded so that pathological input cannot grow it forever.
        self.lookup = lru_cache(maxsize=200_000)(self._lookup)

    def _lookup(self, word: str) -> tuple[int, int] | None:
        form = word.lower()
        if form in self.exceptions:
            candidates = [form, *self.exceptions[form]]
        else:
            candidates = [form] + [
                form[: -len(old)] + new for old, new in NOUN_SUBSTITUTIONS if form.endswith(old)
            ]
        for candidate in candidates:
            found = self.table.get(candidate)
            if found is not None:
                return found
        return None


def _cache_path(key: str) -> Path:
    return cache_dir("score") / f"wordnet_nouns-{key}.json"


def load_wordnet(root: Path, cache_path: Path | None = None) -> tuple[WordNetStats, NounLexicon]:
    """Global statistics and the noun look-up table, from the on-disk cache or built once (NLTK)."""
    corpus = Path(root) / "corpora" / "wordnet"
    key = fingerprint(corpus)
    path = Path(cache_path) if cache_path else _cache_path(key)
    if path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("version") == STATS_VERSION and data.get("fingerprint") == key:
                stats = WordNetStats(
                    **{name: data["stats"][name] for name in WordNetStats.__dataclass_fields__}
                )
                table = {lemma: (int(h), int(d)) for lemma, (h, d) in data["nouns"].items()}
                return stats, NounLexicon(table, data["exceptions"])
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring unreadable WordNet cache %s: %s", path, exc)
    log.info("computing global WordNet noun statistics (once; cached in %s)", path)
    first_offsets = parse_first_offsets(corpus / "index.noun")
    stats, table = compute_noun_statistics(load_reader(str(Path(root))), first_offsets, key)
    exceptions = parse_exceptions(corpus / "noun.exc")
    payload = {"version": STATS_VERSION, "fingerprint": key, "stats": asdict(stats), "nouns": table,
               "exceptions": exceptions}  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(payload, separators=(",", ":")))
    return stats, NounLexicon(table, exceptions)
