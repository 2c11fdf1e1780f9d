"""Faithfulness of a generalized caption (beyond the paper): does it still name what the image shows?

A small LLM's general captions sometimes lose the object ("tote bag with Van Gogh print" -> "a
t-shirt", "Le Creuset Dutch oven" -> "a metal"). A candidate is faithful when one of its words is
a head noun of the original caption, a WordNet synonym of one (a shared noun synset), or a WordNet
hypernym of one (instance hypernyms included: Paris -> city) that is not a top-level abstraction
("object", "thing", "item", "entity", ...: see ABSTRACTIONS, and any synset shallower than
MIN_HYPERNYM_DEPTH).

Head nouns come from spaCy's parse (with the parser): the roots of the noun chunks and every noun
that is not a compound modifier, each with its compound form when it is one or WordNet knows it
("tote bag" -> tote_bag and bag, "Dutch oven" -> dutch_oven and oven). A word tagged as an
adjective that WordNet knows only as a noun counts as a noun (the small tagger's "retriever/JJ").
A name is also checked through its named-entity type (ENTITY_TYPES: "Barack Obama" is a PERSON,
so "a man" keeps it, as does "a director" for "Stanley Kubrick", whom WordNet knows as a film
maker; "a stadium" does not). Only the common senses of a candidate word count ("ball" is not
Lucille Ball). The check applies when the caption
has a common-noun head or such a typed name; otherwise (brands, organizations only) the verdict
is None and any valid answer stands. An abstraction never keeps anything, not even itself.

root_noun() is the noun the rule-based fallback keeps: the head of the caption's root noun chunk
(or of the subject/object of a verb root), frame nouns ("photo of ...") passed over to their
object, abstractions passed over, a typed name replaced by its type ("person", "place",
"building", "artwork", "event"), other names passed over to the first common noun.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from dftrain.generalize.cleaning import is_code, words

# The check's rules decide outputs: shards generalized under other rules are made again (receipts).
# 2: setting nouns, names WordNet knows, split compounds, works "by <person>".
RULES_VERSION = 2
ABSTRACTIONS = frozenset({
    "entity", "physical_entity", "abstraction", "abstract_entity", "object", "physical_object", "whole", "thing",
    "something", "item", "unit", "artifact", "artefact", "product", "merchandise", "commodity", "goods", "good",
    "article", "stuff", "matter", "substance", "material", "instrumentality", "instrumentation", "part",
    "piece", "portion", "element", "component", "group", "collection", "set", "kind", "type", "sort",
})  # fmt: skip
MIN_HYPERNYM_DEPTH = 3  # entity 0, physical entity / abstraction 1, object / group / matter 2
FRAME_NOUNS = frozenset({
    "photo", "photograph", "image", "picture", "pic", "illustration", "drawing", "rendering", "render",
    "vector", "shot", "view", "snapshot", "closeup", "close-up", "wallpaper", "stock", "clipart", "portrait",
})  # fmt: skip
NOUN_TAGS = frozenset({"NN", "NNS", "NNP", "NNPS"})
# A name is also checked through its named-entity type: a candidate word keeps it when the word
# is (a kind of) what the type says (Obama/PERSON -> "a man", Wimbledon/EVENT ->
# "a tennis match"). ORG, PRODUCT and NORP are left out: too broad to tell a wrong object apart.
ENTITY_TYPES = {
    "PERSON": ("person.n.01",),
    "GPE": ("location.n.01",),
    "LOC": ("location.n.01", "geological_formation.n.01", "body_of_water.n.01"),
    "FAC": ("structure.n.01", "facility.n.01"),
    "WORK_OF_ART": ("creation.n.02",),
    "EVENT": ("event.n.01",),
}
# What the rule-based fallback says for a root noun that is such a name.
ENTITY_TYPE_WORDS = {"PERSON": "person", "GPE": "place", "LOC": "place", "FAC": "building",
                     "WORK_OF_ART": "work of art", "EVENT": "event"}  # not "artwork": WordNet's is a printed picture
# Prepositions whose object says where, when, with what or by whom, not what is shown ("serving at
# Wimbledon", "reflected in the pool", "a bag with a print"). Not "of", which leads to the thing itself
# ("a photo of a dog", "a pair of shoes"), nor "on", as often its medium ("oil on canvas") as its place,
# nor words the parser mistakes for one ("20 oz tumbler": oz/ADP).
SETTING_PREPOSITIONS = frozenset({
    "at", "in", "inside", "outside", "under", "beneath", "below", "above", "over", "near", "beside", "behind",
    "across", "along", "around", "against", "among", "amid", "between", "beyond", "through", "into", "onto",
    "from", "off", "past", "toward", "towards", "during", "after", "before", "since", "until", "with",
    "without", "within", "by", "for", "via",
})  # fmt: skip
_SKIP_WORDS = frozenset({"a", "an", "the", "of", "in", "on", "at", "with", "and", "or", "to", "for", "by"})


@dataclass(frozen=True)
class HeadNoun:
    text: str  # lower-cased surface form
    forms: tuple[str, ...]  # WordNet look-up forms, the compound first ("tote_bag", "bag")
    common: bool  # POS NOUN (not a proper noun)
    entity: str | None = None  # the named-entity type of a name (PERSON, ...; WORK_OF_ART for "X by <person>")
    primary: bool = True  # False: in a setting phrase ("at Wimbledon", "in the pool"), not what is shown
    named_class: str | None = None  # what WordNet says a name it knows is (Taj Mahal -> mausoleum)

    @property
    def checkable(self) -> bool:
        return self.common or self.entity is not None or self.named_class is not None


@dataclass(frozen=True)
class Verdict:
    faithful: bool | None  # None: the caption has no common-noun head to check against
    noun: str | None = None  # the original's head noun that was kept
    word: str | None = None  # the candidate's word that keeps it
    relation: str | None = None  # same | synonym | hypernym | entity_type


class NounRelations:
    """WordNet noun relations through NLTK's reader, cached per word."""

    def __init__(self, reader):
        self.reader = reader
        self.synsets = lru_cache(maxsize=50_000)(self._synsets)
        self.base_forms = lru_cache(maxsize=50_000)(self._base_forms)
        self.hypernyms = lru_cache(maxsize=50_000)(self._hypernyms)
        self.name_class = lru_cache(maxsize=50_000)(self._name_class)

    def _synsets(self, word: str) -> frozenset:
        return frozenset(self.reader.synsets(word, pos="n"))

    def _base_forms(self, word: str) -> frozenset[str]:
        # every base form ("shoes" -> shoes, shoe): morphy() returns only the first, and "shoes"
        # is a WordNet lemma of its own (in someone's shoes)
        morphy_all = getattr(self.reader, "_morphy", None)
        bases = morphy_all(word, "n") if morphy_all else [self.reader.morphy(word, "n")]
        return frozenset({word, *(b for b in bases if b)})

    def is_noun(self, token) -> bool:
        """A noun by spaCy's tag, or an adjective tag on a word WordNet knows only as a noun
        (the small tagger's mistakes: "golden retriever" -> retriever/JJ)."""
        if token.pos_ in ("NOUN", "PROPN"):
            return True
        return (token.pos_ == "ADJ" and token.is_alpha and bool(self.synsets(token.lower_))
                and not self.reader.synsets(token.lower_, pos="a") and not self.reader.synsets(token.lower_, pos="s"))

    def known(self, form: str) -> bool:
        return bool(self.synsets(form))

    def is_common_word(self, token) -> bool:
        """WordNet has the word as a lower-case noun lemma and never as a capitalized one ("tower";
        not "Paris", and not "Fuji", which is a cherry as well as the mountain): not a name."""
        word = token.lower_
        if not token.is_alpha:
            return False
        names = {lemma.name() for synset in self.synsets(word) for lemma in synset.lemmas()}
        return word in names and not any(n.lower() == word and n != word for n in names)

    def is_capitalized_common_noun(self, token) -> bool:
        """A proper-noun tag on a common noun of a title-case caption ("4 Piece Sectional", "Eiffel
        Tower"), not a model name after a brand ("Samsung Galaxy", "Ford Mustang")."""
        if token.pos_ != "PROPN" or not self.is_common_word(token):
            return False
        prev = token.nbor(-1) if token.i > 0 else None
        if prev is None or prev.head.i != token.i or prev.pos_ != "PROPN":
            return True
        return self.is_common_word(prev) or self.known(f"{prev.lower_}_{token.lower_}")

    def _name_class(self, form: str) -> str | None:
        """The class of a name WordNet knows as an instance ("taj_mahal" -> "mausoleum", "mount_fuji" ->
        "volcano": its first instance sense; not "fuji" the cherry, a kind, not a name)."""
        for synset in self.reader.synsets(form, pos="n"):  # in WordNet's sense order
            if synset.instance_hypernyms():
                return synset.instance_hypernyms()[0].lemmas()[0].name().replace("_", " ")
        return None

    def _hypernyms(self, word: str) -> frozenset:
        out = set()
        for synset in self.synsets(word):
            out.update(synset.closure(lambda s: s.hypernyms() + s.instance_hypernyms()))
        return frozenset(out)

    def is_abstraction(self, word: str, matched) -> bool:
        if self.base_forms(word) & ABSTRACTIONS:
            return True
        return any(s.min_depth() < MIN_HYPERNYM_DEPTH for s in matched)

    def relation(self, word: str, head: HeadNoun) -> str | None:
        """How `word` (lower-case, or a compound joined by "_") keeps `head`: same / synonym /
        hypernym / entity_type / None. An abstraction ("thing", "item") keeps nothing."""
        if self.base_forms(word) & ABSTRACTIONS:
            return None
        if any(self.base_forms(word) & self.base_forms(form) for form in head.forms):
            return "same"
        mine = self.common_senses(word)
        if not mine:
            return None
        # a compound WordNet knows picks the sense: Central Park is a park, not a ballpark (a stadium)
        senses_of = head.forms[:1] if len(head.forms) > 1 and self.known(head.forms[0]) else head.forms
        for form in senses_of:
            shared = mine & self.synsets(form)
            if shared and not self.is_abstraction(word, shared):
                return "synonym"
        for form in senses_of:
            above = mine & self.hypernyms(form)
            if above and not self.is_abstraction(word, above):
                return "hypernym"
        if self.typed(head) and self.is_a(word, ENTITY_TYPES[head.entity]):
            return "entity_type"  # Obama (PERSON) -> a man: a kind of person
        return None

    def typed(self, head: HeadNoun) -> bool:
        """The head's entity type counts: it has one, and WordNet, when it knows the name, agrees
        (Elizabeth II, a queen, is a PERSON; Westminster Abbey, a minster, is not, whatever the
        tagger says; Times Square, a city district, is no FAC: "a movie theater" does not keep it)."""
        if head.entity is None:
            return False
        if head.named_class is None:
            return True
        senses = self.reader.synsets(head.named_class.replace(" ", "_"), pos="n")  # "Queen of England": no common sense
        types = {self.reader.synset(name) for name in ENTITY_TYPES[head.entity]}
        return bool(senses) and (senses[0] in types or bool(types & set(senses[0].closure(lambda x: x.hypernyms()))))

    def common_senses(self, word: str) -> frozenset:
        """The word's senses as a common noun: "ball" without Lucille Ball (an instance, a name)."""
        return frozenset(s for s in self.synsets(word)
                         if not s.instance_hypernyms() and any(lemma.name().lower() == lemma.name()
                                                               for lemma in s.lemmas()))

    def is_a(self, word: str, type_names: tuple[str, ...]) -> bool:
        """The first common sense of `word` is one of the types or below one (woman -> person; not
        "lion", whose fourth sense is a celebrity)."""
        senses = [s for s in self.reader.synsets(word, pos="n") if s in self.common_senses(word)]
        if not senses:
            return False
        types = {self.reader.synset(name) for name in type_names}
        return senses[0] in types or bool(types & set(senses[0].closure(lambda x: x.hypernyms())))


def candidate_words(candidate: str) -> list[str]:
    """Lower-cased content words of a candidate, then adjacent pairs as compounds ("running_shoes")."""
    tokens = [w.lower() for w in words(candidate) if w.lower() not in _SKIP_WORDS]
    return tokens + [f"{a}_{b}" for a, b in zip(tokens, tokens[1:], strict=False)]


def judge(candidate: str, heads: list[HeadNoun], relations: NounRelations, root: str | None = None) -> Verdict:
    """The verdict on one candidate against the original's head nouns (the root noun's first). Nouns of a
    setting phrase ("at Wimbledon") count only when the caption has no other head to check."""
    if not any(h.checkable for h in heads):
        return Verdict(None)
    shown = [h for h in heads if h.primary]
    if any(h.checkable and h.text not in FRAME_NOUNS for h in shown):  # "photo of X with Y": a frame is no object
        heads = shown
    rank = {"same": 0, "synonym": 1, "hypernym": 2, "entity_type": 3}
    for head in sorted(heads, key=lambda h: h.text != root):  # stable: caption order after the root
        found = [(rank[r], word, r) for word in candidate_words(candidate) if (r := relations.relation(word, head))]
        if found:
            _, word, relation = min(found)
            return Verdict(True, head.text, word, relation)
    return Verdict(False)


def _compound_form(token, relations: NounRelations) -> str | None:
    """The modifier just before the head + the head, when it is a compound or a WordNet noun
    ("tote bag" -> tote_bag, "Dutch oven" -> dutch_oven)."""
    prev = token.nbor(-1) if token.i > 0 else None
    if prev is None or prev.head.i != token.i or not prev.is_alpha:
        return None
    form = f"{prev.lower_}_{token.lower_}"
    return form if prev.dep_ == "compound" or relations.known(form) else None


def _is_premodifier(token) -> bool:
    """A noun that modifies a noun after it ("glass" in "glass cup"): not a head."""
    return token.dep_ in ("compound", "amod", "nmod") and token.head.i > token.i and token.head.pos_ in ("NOUN", "PROPN")


def _in_setting(token) -> bool:
    """On its way up to the root, the token is the object of a setting preposition (SETTING_PREPOSITIONS)."""
    while token.head.i != token.i:
        if token.dep_ == "pobj" and token.head.lower_ in SETTING_PREPOSITIONS and not _titled_object(token):
            return True
        token = token.head
    return False


def _titled_object(token) -> bool:
    """A lower-case noun right after a capitalized title with a preposition inside ("Girl with Balloon
    mural", "Girl with a Pearl Earring poster"): the title's product, not a setting."""
    doc, prep = token.doc, token.head
    return (token.pos_ == "NOUN" and token.text.islower() and token.i > 0 and doc[token.i - 1].text[:1].isupper()
            and prep.i > 0 and doc[prep.i - 1].text[:1].isupper())


def _attributed_work(token) -> bool:
    """A name followed by "by <person>" ("Mona Lisa by Leonardo da Vinci", "The Thinker by Rodin"): a work."""
    return token.pos_ == "PROPN" and any(
        prep.dep_ == "prep" and prep.lower_ == "by" and any(o.dep_ == "pobj" and o.ent_type_ == "PERSON"
                                                            for o in prep.children)
        for prep in token.children)


_NOUN_PHRASE_POS = frozenset({"DET", "NOUN", "PROPN", "NUM", "ADJ"})


def split_compounds(doc, relations: NounRelations) -> dict[int, int]:
    """{i: i + 1} where the parser made the root of the first word of a noun WordNet knows, with the
    second as its object ("Canvas tote bag ...": tote/VERB, bag/dobj; "Pyrex 8-cup glass measuring cup";
    "Bamboo cutting board"), and only a noun phrase comes before it: the second word is the caption's
    head, with the compound as its form, and the words before it modify it."""
    out = {}
    for a in doc[:-1]:
        b = doc[a.i + 1]
        if (a.dep_ == "ROOT" and a.pos_ in ("VERB", "NOUN") and a.is_alpha and b.pos_ == "NOUN"
                and b.head.i == a.i and b.dep_ == "dobj" and relations.known(f"{a.lower_}_{b.lower_}")
                and all(t.pos_ in _NOUN_PHRASE_POS or t.tag_ == "HYPH" for t in doc[: a.i])):
            out[a.i] = b.i
    return out


def _head(token, relations: NounRelations, compound: str | None = None) -> HeadNoun:
    compound = compound or _compound_form(token, relations)
    forms = (compound, token.lower_) if compound else (token.lower_,)
    entity = token.ent_type_ if token.pos_ == "PROPN" and token.ent_type_ in ENTITY_TYPES else None
    if _attributed_work(token):
        entity = "WORK_OF_ART"
    named = relations.name_class(forms[0]) if token.pos_ == "PROPN" else None
    return HeadNoun(token.lower_, forms, token.pos_ != "PROPN", entity, not _in_setting(token), named)


def head_nouns(doc, relations: NounRelations) -> list[HeadNoun]:
    """Noun-chunk roots and nouns that do not modify another noun, in caption order, de-duplicated."""
    chunk_roots = {chunk.root.i for chunk in doc.noun_chunks}
    split = split_compounds(doc, relations)
    modifiers = {t.i for i in split for t in doc[: i + 1]}  # the whole noun phrase before the split head
    heads, seen = [], set()
    for token in doc:
        if token.i in modifiers or not _object_word(token) or not relations.is_noun(token):
            continue  # "5G", "OG", "iPhone": codes and model names are no object
        if token.i not in chunk_roots and token.i not in split.values() and _is_premodifier(token):
            continue
        compound = next((f"{doc[i].lower_}_{token.lower_}" for i, j in split.items() if j == token.i), None)
        head = _head(token, relations, compound)
        if head.forms not in seen:
            seen.add(head.forms)
            heads.append(head)
    return heads


def _of_object(token):
    """The object of "of" after a frame noun ("a photo of a dog" -> dog)."""
    for prep in token.children:
        if prep.dep_ == "prep" and prep.lower_ == "of":
            for obj in prep.children:
                if obj.dep_ == "pobj" and obj.pos_ in ("NOUN", "PROPN"):
                    return obj
    return None


def root_noun(doc, relations: NounRelations, heads: list[HeadNoun] = ()) -> str | None:
    """The head noun of the caption's root noun chunk, as the rule-based fallback uses it (or None)."""
    sentences = list(doc.sents)
    if not sentences:
        return None
    root = sentences[0].root
    split = split_compounds(doc, relations)
    if root.i in split:  # "Canvas tote bag with ...": bag, not the parser's verb "tote" and its subject
        return doc[split[root.i]].lower_
    token = root if root.pos_ in ("NOUN", "PROPN") else next(
        (c for c in root.children if c.dep_ in ("nsubj", "nsubjpass", "dobj", "attr", "appos")
         and c.pos_ in ("NOUN", "PROPN")), None)
    if token is not None and token.lower_ in FRAME_NOUNS:
        framed = _of_object(token)
        if framed is None:  # "a photo of a golden retriever playing": the first common head after it
            return next((h.text for h in heads if h.common and h.text not in FRAME_NOUNS | ABSTRACTIONS), None)
        token = framed
    if token is not None and _attributed_work(token):  # "The Thinker by Rodin": a work, not a thinker
        return _name_word(token, relations, heads)
    if token is not None and token.pos_ == "NOUN" and not relations.common_senses(token.lower_) \
            and (named := relations.name_class(token.lower_)):
        return named  # a name tagged as a noun ("Parthenon/NOUN") -> what WordNet says it is
    if token is not None and (_plain_noun(token) or relations.is_capitalized_common_noun(token)):
        return token.lower_  # "Eiffel Tower" -> tower: a capitalized common noun is still one
    if token is not None and token.pos_ == "PROPN" and (named := _name_word(token, relations, heads)):
        return named
    # a name, a frame noun, a verb root without a noun argument, a code: the root of the first noun
    # chunk headed by a common noun, else the first common-noun head in caption order
    chunk = next((c.root for c in doc.noun_chunks if _plain_noun(c.root)), None)
    if chunk is not None:
        return chunk.lower_
    return next((h.text for h in heads if h.common and h.text not in FRAME_NOUNS | ABSTRACTIONS), None)


def _name_word(token, relations: NounRelations, heads: list[HeadNoun]) -> str | None:
    """What the rule step says for a name at the root: "person" for a person; for a work ("Mona Lisa by
    Leonardo") the kind of work the caption names ("bronze sculpture"), else "work of art"; for a name
    WordNet knows, its class (Taj Mahal -> mausoleum, Colosseum -> amphitheater); else its entity type's
    word ("place", "building", "event"); None when the name has none of these."""
    head = _head(token, relations)
    if head.entity == "PERSON":
        return ENTITY_TYPE_WORDS["PERSON"]
    if head.entity == "WORK_OF_ART":
        kinds = (h.text for h in heads if h.common and relations.is_a(h.text, ENTITY_TYPES["WORK_OF_ART"]))
        return next(kinds, ENTITY_TYPE_WORDS["WORK_OF_ART"])
    if head.named_class is not None:
        return head.named_class
    return ENTITY_TYPE_WORDS[head.entity] if head.entity is not None else None


def _object_word(token) -> bool:
    """Letters only, 3 or more, not a code ("5G", "OG", "iPhone"); or the last word of a typed name
    ("Queen Elizabeth II")."""
    if token.pos_ == "PROPN" and token.ent_type_ in ENTITY_TYPES and token.is_alpha:
        return True
    return token.is_alpha and len(token) >= 3 and not is_code(token.text)


def _plain_noun(token) -> bool:
    word = token.lower_
    return token.pos_ == "NOUN" and _object_word(token) and word not in FRAME_NOUNS and word not in ABSTRACTIONS


class FaithfulChecker:
    """Parses original captions once (spaCy with the parser) and judges candidates against them."""

    def __init__(self, nlp, relations: NounRelations):
        self.nlp = nlp
        self.relations = relations
        self._parsed: dict[str, tuple[list[HeadNoun], str | None]] = {}

    def prepare(self, captions: list[str]) -> None:
        todo = [c for c in dict.fromkeys(captions) if c not in self._parsed]
        for caption, doc in zip(todo, self.nlp.pipe(todo, batch_size=256), strict=True):
            heads = head_nouns(doc, self.relations)
            self._parsed[caption] = (heads, root_noun(doc, self.relations, heads))

    def _entry(self, caption: str) -> tuple[list[HeadNoun], str | None]:
        if caption not in self._parsed:
            self.prepare([caption])
        return self._parsed[caption]

    def check(self, original: str, candidate: str) -> Verdict:
        heads, root = self._entry(original)
        return judge(candidate, heads, self.relations, root)

    def root_noun(self, original: str) -> str | None:
        return self._entry(original)[1]


def load_checker(spacy_model: str | None = None) -> FaithfulChecker:
    """spaCy (with its parser) + WordNet, from local files; MissingDependencyError names what to install."""
    from dftrain.score import wordnet
    from dftrain.score.nlp import load_pipeline

    nlp = load_pipeline(spacy_model, keep_parser=True)
    reader = wordnet.load_reader(str(wordnet.prepare_nltk_root()))
    return FaithfulChecker(nlp, NounRelations(reader))
