"""Cleaning/validation of raw LLM outputs, the rule-based generalizer, prompts and the fallback chain."""

import pytest
from generalize_helpers import ScriptedBackend

from dftrain.errors import ConfigError
from dftrain.generalize.cleaning import clean_output, rejection_reason, validate
from dftrain.generalize.fallback import FALLBACK_CAPTION, rule_generalize, strip_specifics
from dftrain.generalize.generalizer import Generalizer, parse_fallback, truncate_caption
from dftrain.generalize.prompts import PAPER_TEMPLATE, load_few_shot, make_prompt_spec, paper_strip

ORIGINAL = "Nike Air Max 90 running shoes in red and white, size 10"

# raw model output -> (cleaned text, rejection reason or None), all against ORIGINAL, max_words=4
CLEANING_TABLE = [
    (' "running shoes"', "running shoes", None),
    ("\u201cRunning shoes.\u201d", "Running shoes", None),
    ("running shoes.\nThis caption is general because", "running shoes", None),
    ("Here is a more general caption: \"a pair of shoes\"", "a pair of shoes", None),
    ("Here is the generalized caption:\n\nshoes on display", "shoes on display", None),
    ("Sure! Caption: sneakers", "sneakers", None),
    ("General caption: footwear!", "footwear", None),
    ("**a shoe**", "a shoe", None),
    ("- a shoe", "a shoe", None),
    ("", "", "empty"),
    ('  ""  ', "", "empty"),
    ("...", "", "empty"),
    ("I'm sorry, I can't help with that.", "I'm sorry, I can't help with that", "refusal"),
    ("As an AI language model", "As an AI language model", "refusal"),
    ("a pair of red running shoes in a store", "a pair of red running shoes in a store", "too_long"),
    (ORIGINAL, ORIGINAL, "copy"),
    (f'"{ORIGINAL}."', ORIGINAL, "copy"),
    ("Air Max 90 shoes", "Air Max 90 shoes", "kept_number"),
    ("size 10 shoes", "size 10 shoes", "kept_number"),
    ("shoes from 2019", "shoes from 2019", "number"),
    ("Max shoes", "Max shoes", "name"),
    ("red Nike shoes", "red Nike shoes", "name"),
    ("shoes by Adidas", "shoes by Adidas", "name"),
    ("Shoes", "Shoes", None),
]


@pytest.mark.parametrize("raw, cleaned, reason", CLEANING_TABLE)
def test_cleaning_table(raw, cleaned, reason):
    assert validate(raw, ORIGINAL, max_words=4) == (cleaned, reason)


def test_copy_of_the_original_is_rejected_only_when_it_needed_changing():
    assert rejection_reason("Red Shoes 2000", "Red Shoes 2000", max_words=4) == "copy"
    long_original = "a cat sleeping on a sofa near the window"
    assert rejection_reason("A cat sleeping on a sofa, near the window", long_original, max_words=4) == "copy"
    # Already short and plain: keeping it is a valid generalization.
    assert rejection_reason("a dog", "a dog", max_words=4) is None


def test_product_codes_are_detected_and_kept_codes_rejected():
    original = "Canon EOS R5 camera XJ-900 kit"
    assert rejection_reason("EOS camera", original, max_words=4) == "kept_number"
    assert rejection_reason("a camera", original, max_words=4) is None
    assert rejection_reason("a XJ-900", original, max_words=4) == "kept_number"


def test_max_words_limit_is_inclusive():
    assert rejection_reason("one two three four", "x y z w v u", max_words=4) is None
    assert rejection_reason("one two three four five", "x y z w v u", max_words=4) == "too_long"


def test_clean_output_takes_the_first_content_line():
    assert clean_output("\n\n  a bird  \n a plane") == "a bird"


RULE_TABLE = [
    ("Nike Air Max 90 running shoes in red, size 10", "running shoes"),
    ("A photo of a golden retriever playing in the park", "a golden retriever"),
    ("Apple iPhone 12 Pro Max 256GB Pacific Blue smartphone", "a smartphone"),
    ("Barack Obama giving a speech at the White House in 2012", "a speech"),
    ("a red double-decker bus driving past Big Ben in London", "a double-decker bus"),
    ("Close-up photo of a ripe apple on a table", "a ripe apple"),
    ("Vintage Lumora XJ-22 red star poster by Anna Kovacs, Paris 2019", "a star poster"),
    ("elegant umbrella", "an elegant umbrella"),
    ("2019 \u00a9 | 4K", FALLBACK_CAPTION),
    ("", FALLBACK_CAPTION),
]


@pytest.mark.parametrize("caption, expected", RULE_TABLE)
def test_rule_based_generalizer(caption, expected):
    result = rule_generalize(caption, max_words=4)
    assert result == expected
    # Whatever it returns is itself a valid general caption.
    assert rejection_reason(result, caption, max_words=4) is None


def test_strip_specifics_removes_names_numbers_codes():
    assert strip_specifics("Nike Air Max 90 shoes by John's shop, XJ-9") == "Nike shoes by shop"


def test_truncate_caption_cuts_at_a_word_boundary():
    text = "word " * 3000
    cut = truncate_caption(text, 512)
    assert len(cut) <= 512 and cut.endswith("word")
    assert truncate_caption("  a   b ", 512) == "a b"


def test_parse_fallback():
    assert parse_fallback("retry,rule,original") == ("retry", "rule", "original")
    assert parse_fallback("drop") == ("drop",)
    assert parse_fallback(" rule ") == ("rule",)
    for bad in ("retry", "original,drop", "rule,retry,original", "retry,banana", "", "rule,rule"):
        with pytest.raises(ConfigError):
            parse_fallback(bad)


def test_prompt_specs():
    embedded = make_prompt_spec("embedded")
    assert embedded.mode == "fewshot" and len(embedded.few_shot) >= 8
    prompt = embedded.completion_prompts(["a\nb"])[0]
    assert prompt.startswith(embedded.header) and prompt.endswith("a b =>")
    chat = make_prompt_spec("vllm")
    assert chat.mode == "chat" and chat.template == PAPER_TEMPLATE
    assert chat.conversations(["x"])[0][0]["content"] == PAPER_TEMPLATE.format(caption="x")
    custom = make_prompt_spec("embedded", prompt_template="Generalize: {caption}")
    assert custom.mode == "chat" and custom.hash() != chat.hash() != embedded.hash()
    with pytest.raises(ConfigError):
        make_prompt_spec("vllm", prompt_template="no placeholder")
    with pytest.raises(ConfigError):
        make_prompt_spec("vllm", prompt_template="{caption}", few_shot="f.txt")


def test_the_papers_prompt_character_for_character():
    """openai_api_sample.py: "...(result in less than 5 words)\uff1a\"" + v + "\"", a full-width colon, no space."""
    chat = make_prompt_spec("vllm")
    content = chat.conversations(['"Nike Air Max 90, size 10."'])[0][0]["content"]
    expected = ("Make this caption of an image extremely general (result in less than 5 words)"
                + chr(0xFF1A) + '"Nike Air Max 90, size 10."')  # the quotes go, the period stays
    assert content == expected
    assert content.encode("utf-8").count(b"\xef\xbc\x9a\"") == 1 and ": " not in content
    # their stripping: only while the caption starts AND ends with punctuation
    assert paper_strip("A dog.") == "A dog."
    assert paper_strip("(a dog)") == "a dog" and paper_strip("'\"a dog\"'") == "a dog"
    assert paper_strip("!") == "!" and paper_strip("!!") == ""


def test_few_shot_file(tmp_path):
    path = tmp_path / "shots.txt"
    path.write_text("# comment\nRed Nike shoes => shoes\n\nA cat named Tom => a cat\n")
    assert load_few_shot(path) == [("Red Nike shoes", "shoes"), ("A cat named Tom", "a cat")]
    path.write_text("no arrow here\n")
    with pytest.raises(ConfigError):
        load_few_shot(path)
    with pytest.raises(ConfigError):
        load_few_shot(tmp_path / "missing.txt")


def test_fallback_chain_records_each_step():
    answers = {  # caption -> (first answer, strict retry answer)
        "A cat named Tom sleeping on a sofa": ("a cat", "unused"),
        "Nike Air Max 90 shoes": ("Air Max 90", "shoes"),
        "Sony WH-1000XM4 headphones on a desk": ("WH-1000XM4", "I'm sorry"),
        "Mount Fuji in Japan 2019": ("", ""),
    }
    backend = ScriptedBackend(lambda c, strict: next(a[1] if strict else a[0] for k, a in answers.items()
                                                       if k == c or strip_specifics(k) == c))
    spec = make_prompt_spec("vllm")
    results = Generalizer(backend, spec, fallback=("retry", "rule", "original"), batch_size=2).generalize(
        list(answers))
    got = [(r.caption, r.step, r.reason) for r in results]
    assert got == [
        ("a cat", "llm", None),
        ("shoes", "retry", "kept_number"),
        ("headphones", "rule", "kept_number"),
        ("an image", "rule", "empty"),
    ]
    # The retry saw the caption without its names, numbers and codes.
    assert any("Nike shoes" in call for call in backend.calls[2:])
    dropped = Generalizer(ScriptedBackend(lambda c, s: ""), spec, fallback=("drop",)).generalize(["X 1"])
    assert (dropped[0].caption, dropped[0].step, dropped[0].reason) == (None, "drop", "empty")
    kept = Generalizer(ScriptedBackend(lambda c, s: ""), spec, fallback=("original",)).generalize(["X 1"])
    assert (kept[0].caption, kept[0].step) == ("X 1", "original")


class LengthScorer:
    """Fewer words = more general (a stand-in for the real score)."""

    def score_many(self, captions):
        return [{"generality": 10.0 - len(c.split())} for c in captions]


def test_target_generality_reasks_until_the_score_is_reached():
    backend = ScriptedBackend(lambda c, strict: {"red running shoes": "running shoes",
                                                 "running shoes": "shoes"}.get(c, "red running shoes"))
    spec = make_prompt_spec("vllm")
    g = Generalizer(backend, spec, scorer=LengthScorer(), target_generality=9.0, rounds=3)
    result = g.generalize(["Nike Air Max 90 red running shoes, size 10"])[0]
    assert (result.caption, result.rounds) == ("shoes", 2)
    capped = Generalizer(backend, spec, scorer=LengthScorer(), target_generality=9.0, rounds=1)
    assert capped.generalize(["Nike Air Max 90 red running shoes, size 10"])[0].caption == "running shoes"
    with pytest.raises(ConfigError):
        Generalizer(backend, spec, target_generality=5.0)


def test_example_echo_is_rejected_only_without_a_shared_word():
    from dftrain.generalize.cleaning import echoes_example

    answers = {"a mountain", "running shoes", "a tower at sunset"}
    assert echoes_example("a mountain", "Lego Star Wars Millennium Falcon set", answers)
    assert not echoes_example("a mountain", "Snowy mountains in the Alps", answers)
    assert not echoes_example("Running shoes", "Adidas shoe for runners", answers)
    assert not echoes_example("a tower at sunset", "Sunset over a lake", answers)
    assert not echoes_example("a set", "Lego set", answers)  # not an example answer at all
    # Related to the example's specific caption: a plausible answer, not a guess.
    examples = {"an old car": "Vintage 1967 Ford Mustang GT convertible"}
    assert not echoes_example("an old car", "1965 Ford Mustang in red", examples)
    assert echoes_example("an old car", "Lego Millennium Falcon set", examples)


def test_generalizer_sends_example_echoes_down_the_chain(tmp_path):
    shots = tmp_path / "shots.txt"
    shots.write_text("Mount Fuji in Japan => a mountain\nRed Nike shoes size 10 => shoes\n")
    spec = make_prompt_spec("embedded", few_shot=shots)
    backend = ScriptedBackend(lambda c, s: "a mountain")
    results = Generalizer(backend, spec, fallback=("rule",)).generalize(["Lego Millennium Falcon set", "a mountain"])
    assert [(r.caption, r.step, r.reason) for r in results] == [
        ("a set", "rule", "example_echo"), ("a mountain", "llm", None)]
