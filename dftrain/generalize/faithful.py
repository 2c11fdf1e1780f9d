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

Rules 3 and 4 narrow what counts as shown: concrete heads before abstract ones (WordNet's lexicographer
files: "a speech" does not keep "Obama delivering a speech"), not a possessor ("Levi's"), not what a
person or an animal acts on ("collie herding sheep"), not where a participle puts it ("mounted on");
a plural head without its mass senses ("jeans" are no denim); the subject of a verb WordNet frames with
"Somebody" is a person; a class noun before a name is its head ("Lake Louise"); and they repair the
parse of hyphenated and verb-tagged nouns ("self-portrait", "building set/VERB 75257").

root_noun() is the noun the rule-based fallback keeps: the head of the caption's root noun chunk
(or of the subject/object of a verb root), frame and partitive nouns ("photo of ...", "a pair of
...") passed over to their object, abstractions passed over, an abstract head passed over to a concrete one, a typed name replaced by its type ("person", "place",
"building", "artwork", "event"), other names passed over to the first common noun.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from dftrain.generalize.cleaning import is_code, words

# The check's rules decide outputs: shards generalized under other rules are made again (receipts).
# 2: setting nouns, names WordNet knows, split compounds, works "by <person>".
# 3: concrete heads first, possessors, plural count senses, agents of person verbs, hyphenated and
#    verb-tagged compounds, partitive "X of Y", works by a person WordNet knows.
# 4: what an animate subject acts on, places of participles ("mounted on"), a name's leading class noun.
RULES_VERSION = 4
ABSTRACTIONS = frozenset({
    "entity", "physical_entity", "abstraction", "abstract_entity", "object", "physical_object", "whole", "thing",
    "something", "item", "unit", "artifact", "artefact", "product", "merchandise", "commodity", "goods", "good",
    "article", "stuff", "matter", "substance", "material", "instrumentality", "instrumentation", "part",
    "piece", "portion", "element", "component", "group", "collection", "set", "kind", "type", "sort",
})  # fmt: skip
MIN_HYPERNYM_DEPTH = 3  # entity 0, physical entity / abstraction 1, object / group / matter 2
# An image shows things: a head that WordNet does not file as one ("speech", "generation", "noise", "final",
# "red") counts only where the caption has no concrete head. Concrete: the first sense in one of these
# lexicographer files (or a person), or any sense in one ("case": the container); a rare person sense
# ("red": a Bolshevik) does not make a word concrete.
CONCRETE_LEXNAMES = frozenset({"noun.artifact", "noun.object", "noun.location", "noun.shape", "noun.food", "noun.plant",
                               "noun.animal", "noun.body", "noun.substance"})
# A plural noun is counted, so its mass senses do not apply ("jeans" are trousers, not denim; "glasses"
# are not glass): senses below these.
MASS_SENSES = ("material.n.01", "fabric.n.01")
# Partitive and collective nouns: "a set of wine glasses", "a pair of shoes" show the glasses, the shoes.
PARTITIVE_SENSES = ("group.n.01", "definite_quantity.n.01", "indefinite_quantity.n.01")
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
    concrete: bool = True  # a sense is a physical entity (or WordNet does not know the word), or a name
    plural: bool = False  # tagged plural: only count senses (MASS_SENSES left out)
    frame: bool = False  # a frame noun ("photo", "portrait"), not a compound WordNet knows ("self-portrait")

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
        self.is_concrete = lru_cache(maxsize=50_000)(self._is_concrete)
        self.count_senses = lru_cache(maxsize=50_000)(self._count_senses)
        self.person_verb = lru_cache(maxsize=10_000)(self._person_verb)

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

    def _hypernyms(self, word: str, plural: bool = False) -> frozenset:
        out = set()
        for synset in self.count_senses(word) if plural else self.synsets(word):
            out.update(synset.closure(lambda s: s.hypernyms() + s.instance_hypernyms()))
        return frozenset(out)

    def _below(self, synset, names: tuple[str, ...]) -> bool:
        above = {synset, *synset.closure(lambda s: s.hypernyms() + s.instance_hypernyms())}
        return any(self.reader.synset(name) in above for name in names)

    def _count_senses(self, word: str) -> frozenset:
        """The word's senses without its mass senses (materials, fabrics): what a plural form can mean."""
        return frozenset(s for s in self.synsets(word) if not self._below(s, MASS_SENSES))

    def _is_concrete(self, word: str) -> bool:
        """The word names a thing (CONCRETE_LEXNAMES), or WordNet does not know it."""
        common = self.common_senses(word)
        senses = [s for s in self.reader.synsets(word, pos="n") if s in common]  # WordNet's order
        if not senses:
            return True
        return senses[0].lexname() in CONCRETE_LEXNAMES | {"noun.person"} or any(
            s.lexname() in CONCRETE_LEXNAMES for s in senses)

    def is_partitive(self, word: str) -> bool:
        """A noun that names an amount or a collection of what follows ("set", "pair", "bunch"): an
        abstraction, or its first sense a group or a measure."""
        if self.base_forms(word) & ABSTRACTIONS:
            return True
        senses = self.reader.synsets(word, pos="n")
        return bool(senses) and self._below(senses[0], PARTITIVE_SENSES)

    def _person_verb(self, lemma: str) -> bool:
        """The verb's first sense takes a person as its subject in every one of WordNet's sentence
        frames ("Somebody win something"; not "Something loom", "Something wind")."""
        senses = self.reader.synsets(lemma, pos="v")
        frames = [f for lem in senses[0].lemmas() if lem.name().lower() == lemma for f in lem.frame_strings()] \
            if senses else []
        return bool(frames) and all(f.startswith("Somebody") for f in frames)

    def names_person(self, forms: tuple[str, ...]) -> bool:
        """WordNet knows the name as a person ("sandro_botticelli": an old master)."""
        return any(s.instance_hypernyms() and self._below(s, ("person.n.01",))
                   for form in forms for s in self.reader.synsets(form, pos="n"))

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
            shared = mine & (self.count_senses(form) if head.plural else self.synsets(form))
            if shared and not self.is_abstraction(word, shared):
                return "synonym"
        for form in senses_of:
            above = mine & self.hypernyms(form, head.plural)
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
    for kept in (lambda h: h.primary, lambda h: h.concrete):  # what is shown, then what is physical
        narrowed = [h for h in heads if kept(h)]
        if any(h.checkable and not h.frame for h in narrowed):  # "photo of X with Y": a frame is no object
            heads = narrowed
    rank = {"same": 0, "synonym": 1, "hypernym": 2, "entity_type": 3}
    for head in sorted(heads, key=lambda h: h.text != root):  # stable: caption order after the root
        found = [(rank[r], word, r) for word in candidate_words(candidate) if (r := relations.relation(word, head))]
        if found:
            _, word, relation = min(found)
            return Verdict(True, head.text, word, relation)
    return Verdict(False)


def _compound_form(token, relations: NounRelations) -> str | None:
    """The modifier just before the head + the head, when it is a compound or a WordNet noun
    ("tote bag" -> tote_bag, "Dutch oven" -> dutch_oven), or a hyphenated noun WordNet knows
    ("self-portrait")."""
    prev = token.nbor(-1) if token.i > 0 else None
    if prev is not None and prev.tag_ == "HYPH" and token.i > 1 and token.nbor(-2).is_alpha:
        hyphenated = f"{token.nbor(-2).lower_}-{token.lower_}"
        if relations.known(hyphenated):
            return hyphenated
    if prev is None or prev.head.i != token.i or not prev.is_alpha:
        return None
    form = f"{prev.lower_}_{token.lower_}"
    return form if prev.dep_ == "compound" or relations.known(form) else None


def _is_premodifier(token, relations: NounRelations) -> bool:
    """A noun that modifies a noun after it ("glass" in "glass cup"): not a head; but a noun before a name
    that says what the name is, is its class ("pyramid El Castillo", "Lake Louise"; see _classifier)."""
    return (token.dep_ in ("compound", "amod", "nmod") and token.head.i > token.i
            and token.head.pos_ in ("NOUN", "PROPN")
            and getattr(_classifier(token.head, relations), "i", None) != token.i)


def _classifier(token, relations: NounRelations):
    """The common noun before a name that says what the name is, or None: lower-case just before it ("the
    pyramid El Castillo", "the river Thames"), or a capitalized common word opening a name whose own
    head is no common word, first a thing or a place ("Lake Louise", "Golden Temple Harmandir Sahib"; not
    "Apple Watch", nor "Great" in "The Great Wave")."""
    if token.pos_ != "PROPN" or relations.known(_name_forms(token, relations)[0]) or is_code(token.text):
        return None  # a name WordNet knows says what it is itself ("Mount Fuji": a volcano); "Apple iPhone"
    for c in token.children:
        if c.dep_ != "compound" or c.i > token.i or not all(t.pos_ == "PROPN" for t in token.doc[c.i + 1:token.i]):
            continue
        if c.pos_ == "NOUN" and c.text.islower():
            return c
        senses = relations.reader.synsets(c.lower_, pos="n")
        if c.text.istitle() and relations.is_common_word(c) and not relations.is_capitalized_common_noun(token) \
                and senses and senses[0].lexname() in CONCRETE_LEXNAMES:  # a thing or a place: not "The Great Wave"
            return c
    return None


def _animate(token, relations: NounRelations) -> bool:
    """A person or an animal: a typed person name, or a common noun whose first sense is one."""
    if token.pos_ == "PROPN" or _name_like(token, relations):
        return token.ent_type_ == "PERSON" or _agent_of_person_verb(token, relations)
    senses = relations.reader.synsets(token.lower_, pos="n")
    return bool(senses) and senses[0].lexname() in ("noun.person", "noun.animal")


def _acted_on(token, relations: NounRelations) -> bool:
    """The object of a verb whose subject is a person or an animal ("Border collie herding sheep", "Ronaldo
    celebrating a goal"): what the subject does, not what the image is of."""
    if token.dep_ != "dobj" or token.head.pos_ != "VERB":
        return False
    verb = token.head
    subject = next((c for c in verb.children if c.dep_ == "nsubj" or (c.dep_ == "npadvmod" and c.i < verb.i
                                                                        and c.pos_ == "NOUN")), None)
    if subject is None and verb.dep_ == "acl":
        subject = verb.head  # "puppy chewing a toy"
    return subject is not None and _animate(subject, relations)


def _in_setting(token, relations: NounRelations) -> bool:
    """On its way up to the root, the token is the object of a setting preposition (SETTING_PREPOSITIONS),
    or of "on" after a verb ("camera mounted on a surfboard"; not "oil on canvas"), or what an animate
    subject acts on, or a possessor ("Levi's jeans", "Michelangelo's David": the maker, not what is shown)."""
    if token.dep_ == "poss":
        return True
    while token.head.i != token.i:
        if token.dep_ == "pobj" and token.head.lower_ in SETTING_PREPOSITIONS and not _titled_object(token):
            return True
        if token.dep_ == "pobj" and token.head.lower_ in ("on", "upon") and token.head.head.pos_ == "VERB":
            return True
        if _acted_on(token, relations):
            return True
        token = token.head
    return False


def _titled_object(token) -> bool:
    """A lower-case noun right after a capitalized title with a preposition inside ("Girl with Balloon
    mural", "Girl with a Pearl Earring poster"): the title's product, not a setting."""
    doc, prep = token.doc, token.head
    return (token.pos_ == "NOUN" and token.text.islower() and token.i > 0 and doc[token.i - 1].text[:1].isupper()
            and prep.i > 0 and doc[prep.i - 1].text[:1].isupper())


def _attributed_work(token, relations: NounRelations) -> bool:
    """A name followed by "by <person>" ("Mona Lisa by Leonardo da Vinci", "The Thinker by Rodin"): a work.
    The person is one to the tagger, or to WordNet ("Sandro Botticelli", whom the tagger calls an ORG)."""
    return token.pos_ == "PROPN" and any(
        prep.dep_ == "prep" and prep.lower_ == "by" and any(
            o.dep_ == "pobj" and (o.ent_type_ == "PERSON" or relations.names_person(_name_forms(o, relations)))
            for o in prep.children)
        for prep in token.children)


def _name_forms(token, relations: NounRelations) -> tuple[str, ...]:
    compound = _compound_form(token, relations)
    return (compound, token.lower_) if compound else (token.lower_,)


def _name_like(token, relations: NounRelations) -> bool:
    """A proper noun, or a capitalized word WordNet does not know that the tagger took for a noun
    ("Beyonce/NOUN")."""
    return token.pos_ == "PROPN" or (token.pos_ == "NOUN" and token.is_alpha and token.text[:1].isupper()
                                     and not relations.known(token.lower_))


def _agent_of_person_verb(token, relations: NounRelations) -> bool:
    """The token is the subject of a verb whose subject is a person (WordNet's frames: "Usain Bolt
    winning the final", "Beyonce performing at ..."), as subject or as the noun the verb describes."""
    active = ("VBG", "VBZ", "VBP")  # not a participle: "Petra Treasury carved into the cliffs" is carved
    verbs = [token.head] if (token.dep_ == "nsubj" and token.head.pos_ == "VERB" and token.head.tag_ in active
                             and token.head.dep_ == "ROOT") else []
    verbs += [c for c in token.children if c.dep_ in ("acl", "relcl") and c.pos_ == "VERB" and c.tag_ == "VBG"]
    return any(relations.person_verb(relations.reader.morphy(v.lower_, "v") or v.lower_) for v in verbs)


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


def verb_tagged_nouns(doc, relations: NounRelations) -> dict[int, int]:
    """{verb i: subject i} where the parser made a verb root of the last noun of a noun phrase, with only
    a number after it ("Millennium Falcon building set 75257": building/subject set/VERB 75257/object):
    the verb is the caption's head noun, with its subject as compound modifier."""
    out = {}
    for verb in doc:
        subject = doc[verb.i - 1] if verb.i > 0 else None
        if (verb.dep_ == "ROOT" and verb.pos_ == "VERB" and verb.is_alpha and relations.known(verb.lower_)
                and subject is not None and subject.dep_ == "nsubj" and subject.head.i == verb.i
                and subject.pos_ == "NOUN" and not any(c.dep_ == "det" for c in subject.children)
                and all(c.i == subject.i or c.pos_ in ("NUM", "PUNCT") for c in verb.children)):
            out[verb.i] = subject.i
    return out


def _head(token, relations: NounRelations, compound: str | None = None) -> HeadNoun:
    compound = compound or _compound_form(token, relations)
    forms = (compound, token.lower_) if compound else (token.lower_,)
    name = _name_like(token, relations)
    entity = token.ent_type_ if token.pos_ == "PROPN" and token.ent_type_ in ENTITY_TYPES else None
    if _attributed_work(token, relations):
        entity = "WORK_OF_ART"
    named = relations.name_class(forms[0]) if token.pos_ == "PROPN" else None
    if name and entity != "PERSON" and _agent_of_person_verb(token, relations) \
            and (named is None or relations.names_person(forms)):
        entity, named = "PERSON", None  # the tagger's GPE or nothing: the verb says a person
    classifier = token.head.i != token.i and getattr(_classifier(token.head, relations), "i", None) == token.i
    common = not name if entity == "PERSON" else token.pos_ != "PROPN" or classifier  # "Lake" of Lake Louise
    known_compound = len(forms) > 1 and relations.known(forms[0])
    concrete = entity != "EVENT" if not common else relations.is_concrete(forms[0] if known_compound else forms[-1])
    frame = token.lower_ in FRAME_NOUNS and not (known_compound and forms[0] not in FRAME_NOUNS)
    return HeadNoun(token.lower_, forms, common, entity, not _in_setting(token, relations), named, concrete,
                    token.tag_ in ("NNS", "NNPS"), frame)


def head_nouns(doc, relations: NounRelations) -> list[HeadNoun]:
    """Noun-chunk roots and nouns that do not modify another noun, in caption order, de-duplicated."""
    chunk_roots = {chunk.root.i for chunk in doc.noun_chunks}
    split = split_compounds(doc, relations)
    verb_nouns = verb_tagged_nouns(doc, relations)
    modifiers = {t.i for i in split for t in doc[: i + 1]}  # the whole noun phrase before the split head
    modifiers |= {t.i for i in verb_nouns.values() for t in doc[i].subtree}
    heads, seen = [], set()
    for token in doc:
        if token.i in modifiers or not _object_word(token) or not (relations.is_noun(token) or token.i in verb_nouns):
            continue  # "5G", "OG", "iPhone": codes and model names are no object
        if token.i not in chunk_roots and token.i not in split.values() and _is_premodifier(token, relations):
            continue
        compound = next((f"{doc[i].lower_}_{token.lower_}" for i, j in split.items() if j == token.i), None)
        if token.i in verb_nouns:
            compound = f"{doc[verb_nouns[token.i]].lower_}_{token.lower_}"
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
    choice = _root_token(doc, relations, heads)
    if choice is None or isinstance(choice, str):
        return choice
    return _word_for(choice, doc, relations, heads)


def _root_token(doc, relations: NounRelations, heads: list[HeadNoun]):
    """The token that heads the root noun chunk; or already the answer (a str, or None) where the parse
    alone decides it (split compounds, verb-tagged nouns, attributed works, frames, no noun at all)."""
    sentences = list(doc.sents)
    if not sentences:
        return None
    root = sentences[0].root
    split = split_compounds(doc, relations)
    if root.i in split:  # "Canvas tote bag with ...": bag, not the parser's verb "tote" and its subject
        return doc[split[root.i]].lower_
    verb_nouns = verb_tagged_nouns(doc, relations)
    if root.i in verb_nouns:  # "... building set 75257": the verb "set" is the noun
        return _partitive_phrase(root, doc[verb_nouns[root.i]], relations)
    token = root if root.pos_ in ("NOUN", "PROPN") else next(
        (c for c in root.children if (c.dep_ in ("nsubj", "nsubjpass", "dobj", "attr", "appos")
                                       or (c.dep_ == "npadvmod" and c.i < root.i))  # "Border collie herding"
         and c.pos_ in ("NOUN", "PROPN")), None)
    if token is not None and _attributed_work(token, relations):  # "The Thinker by Rodin": a work, not a thinker
        return _name_word(token, relations, heads)
    if token is not None and (_head(token, relations).frame or _partitive(token, relations)):
        framed = _of_object(token)  # "a photo of a dog", "a set of wine glasses"
        if framed is None and _head(token, relations).frame:  # "a photo of a golden retriever playing": the first common head after it
            return next((h.text for h in heads if h.common and not h.frame and h.text not in ABSTRACTIONS), None)
        token = framed or token
    if token is None:
        return _first_common_noun(doc, heads, relations)
    return token


def _word_for(token, doc, relations: NounRelations, heads: list[HeadNoun]) -> str | None:
    """The word the root chunk's head token stands for: itself, its class, a concrete head, a phrase."""
    head = _head(token, relations)
    if head.entity == "PERSON" and token.pos_ == "NOUN":  # a name the tagger took for a noun ("Beyonce")
        return ENTITY_TYPE_WORDS["PERSON"]
    if token.pos_ == "NOUN" and not relations.common_senses(token.lower_) \
            and (named := relations.name_class(token.lower_)):
        return named  # a name tagged as a noun ("Parthenon/NOUN") -> what WordNet says it is
    if head.common and not head.concrete:  # "noise cancelling headphones", "2nd generation with ... case"
        concrete = next((h.text for h in heads if h.common and h.concrete and h.primary and not h.frame
                         and h.text not in ABSTRACTIONS), None)
        if concrete is not None:
            return concrete
    if _partitive(token, relations):  # "Lego chess set": the set with what it is of
        modifier = token.nbor(-1) if token.i > 0 else None
        if modifier is not None and modifier.dep_ == "compound" and modifier.head.i == token.i \
                and modifier.pos_ == "NOUN":
            return _partitive_phrase(token, modifier, relations)
    if _plain_noun(token) or (token.pos_ == "NOUN" and not head.frame and token.lower_ in FRAME_NOUNS) \
            or relations.is_capitalized_common_noun(token):
        return token.lower_  # "Eiffel Tower" -> tower: a capitalized common noun is still one
    if (classifier := _classifier(token, relations)) is not None:  # "pyramid El Castillo", "Lake Louise"
        return classifier.lower_
    if token.pos_ == "PROPN" and (named := _name_word(token, relations, heads)):
        return named
    return _first_common_noun(doc, heads, relations)


def _first_common_noun(doc, heads: list[HeadNoun], relations: NounRelations) -> str | None:
    """For a name, a frame noun, a verb root without a noun argument, a code: the root of the first noun
    chunk headed by a common noun, else the first common-noun head in caption order."""
    chunks = [c.root for c in doc.noun_chunks if _plain_noun(c.root)]
    chunk = next((t for t in chunks if not _in_setting(t, relations)), chunks[0] if chunks else None)  # what is shown first
    if chunk is not None:
        return chunk.lower_
    return next((h.text for h in heads if h.common and not h.frame and h.text not in ABSTRACTIONS), None)


def _partitive(token, relations: NounRelations) -> bool:
    """A common noun naming an amount or a collection ("set", "pair"; not "Samsung Galaxy")."""
    return token.pos_ == "NOUN" and relations.is_partitive(token.lower_)


def _partitive_phrase(token, modifier, relations: NounRelations) -> str:
    """A partitive noun keeps the noun before it ("building set", "chess set"); another noun stands alone."""
    return f"{modifier.lower_} {token.lower_}" if relations.is_partitive(token.lower_) else token.lower_


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
