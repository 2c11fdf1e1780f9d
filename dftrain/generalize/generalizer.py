"""The fallback chain over a list of unique captions: LLM, then retry, rule, original or drop.

    g = Generalizer(backend, spec, fallback=parse_fallback("retry,rule,original"))
    results = g.generalize(["Nike Air Max 90 running shoes, size 10", ...])
    results[0].caption, results[0].step, results[0].reason     # "running shoes", "llm", None

Every result records which step produced it (`llm`, `retry`, `rule`, `original`, `drop`)
and, when the first LLM answer was rejected, why (`fallback` reason, see cleaning.py; with a
faithfulness checker also `unfaithful`: the answer kept no head noun of the caption, see
faithful.py; the rule step then keeps the head noun of the caption's root noun chunk).
With a scorer and `target_generality`, captions whose generality score stays below the
target are re-asked up to `rounds` times, feeding the current caption back in; a new
answer replaces the old one only when it is valid and scores higher.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from dftrain.errors import ConfigError
from dftrain.generalize.cleaning import echoes_example, normalize, rejection_reason, validate
from dftrain.generalize.fallback import rule_generalize, strip_specifics
from dftrain.generalize.prompts import PromptSpec, ask

log = logging.getLogger("dftrain.generalize")

STEPS = ("llm", "retry", "rule", "original", "drop")
TERMINAL_STEPS = ("rule", "original", "drop")
DEFAULT_FALLBACK = ("retry", "rule", "original")
DEFAULT_MAX_INPUT_CHARS = 512


def parse_fallback(text: str | Sequence[str]) -> tuple[str, ...]:
    """'retry,rule,original' -> ('retry', 'rule', 'original'), checked.

    Steps run in the fixed order retry -> rule -> original|drop; the chain must end in a
    step that always yields a decision (rule, original or drop).
    """
    items = [s.strip().lower() for s in (text.split(",") if isinstance(text, str) else text) if s.strip()]
    unknown = [s for s in items if s not in STEPS[1:]]
    if unknown:
        raise ConfigError(f"unknown --fallback step(s) {unknown}; use retry, rule, original, drop")
    if len(set(items)) != len(items):
        raise ConfigError(f"--fallback lists a step twice: {items}")
    if "original" in items and "drop" in items:
        raise ConfigError("--fallback: choose original or drop, not both")
    order = [s for s in STEPS[1:] if s in items]
    if items != order:
        raise ConfigError(f"--fallback steps run in the order retry, rule, original|drop; got {items}")
    if not items or items[-1] not in TERMINAL_STEPS:
        raise ConfigError("--fallback must end with rule, original or drop (what to do when the LLM fails)")
    return tuple(items)


def truncate_caption(caption: str, max_chars: int) -> str:
    """At most `max_chars` characters, cut at a word boundary when there is one."""
    caption = " ".join(caption.split())
    if len(caption) <= max_chars:
        return caption
    cut = caption[:max_chars]
    space = cut.rfind(" ")
    return cut[:space] if space > max_chars // 2 else cut


@dataclass
class Generalized:
    """One caption's outcome: `caption` None means dropped.

    With a faithfulness checker, `faithful` says whether the caption keeps a head noun of the
    original (None: nothing to check) and `faithful_noun` which one.
    """

    caption: str | None
    step: str
    reason: str | None = None
    rounds: int = 0
    faithful: bool | None = None
    faithful_noun: str | None = None

    def with_verdict(self, verdict) -> Generalized:
        if verdict is not None:
            self.faithful, self.faithful_noun = verdict.faithful, verdict.noun
        return self


class Generalizer:
    def __init__(self, backend, spec: PromptSpec, *, fallback: Sequence[str] = DEFAULT_FALLBACK,
                 batch_size: int | None = 32, max_input_chars: int = DEFAULT_MAX_INPUT_CHARS, scorer=None,
                 target_generality: float | None = None, rounds: int = 2, faithful=None):
        if batch_size is not None and batch_size < 1:
            raise ConfigError("--batch-size must be >= 1")
        if target_generality is not None and scorer is None:
            raise ConfigError("--target-generality needs the generality scorer (dftrain.score), which is unavailable")
        self.backend = backend
        self.spec = spec
        self.fallback = tuple(fallback)
        self.batch_size = batch_size
        self.max_input_chars = max_input_chars
        self.scorer = scorer
        self.target = target_generality
        self.rounds = rounds
        self.faithful = faithful  # a faithful.FaithfulChecker, or None (no meaning check)
        self.example_answers = {normalize(general): specific for specific, general in spec.few_shot}

    @property
    def max_words(self) -> int:
        return self.spec.max_words

    def _check(self, raw: str, original: str) -> tuple[str, str | None, object]:
        """(cleaned answer, rejection reason or None, faithfulness verdict or None)."""
        cleaned, reason = validate(raw, original, max_words=self.max_words)
        if reason is None and echoes_example(cleaned, original, self.example_answers):
            reason = "example_echo"
        return (cleaned, *self._judge(cleaned, original, reason))

    def _judge(self, candidate: str, original: str, reason: str | None) -> tuple[str | None, object]:
        if reason is not None or self.faithful is None:
            return reason, None
        verdict = self.faithful.check(original, candidate)
        return ("unfaithful" if verdict.faithful is False else None), verdict

    def _ask_batched(self, inputs: list[str], *, strict: bool, on_batch: Callable[[list[int]], None] | None = None
                     ) -> list[str]:
        """Raw outputs for inputs, asked in batches of similar length (less padding); batch_size None: all
        in one call (an engine that schedules by itself, vLLM)."""
        order = sorted(range(len(inputs)), key=lambda i: len(inputs[i]))
        outputs = [""] * len(inputs)
        step = self.batch_size or max(1, len(order))
        for start in range(0, len(order), step):
            chunk = order[start:start + step]
            raws = ask(self.backend, self.spec, [inputs[i] for i in chunk], strict=strict)
            if len(raws) != len(chunk):
                raise RuntimeError(f"backend returned {len(raws)} outputs for {len(chunk)} prompts")
            for i, raw in zip(chunk, raws, strict=True):
                outputs[i] = raw
            if on_batch:
                on_batch(chunk)
        return outputs

    def generalize(self, captions: Sequence[str], *, on_batch: Callable[[list[int]], None] | None = None  # noqa: C901 (predates the complexity rule)
                   ) -> list[Generalized]:
        """One result per caption (same order). `on_batch(indices)` is called after each first-pass batch."""
        inputs = [truncate_caption(c, self.max_input_chars) for c in captions]
        results: list[Generalized | None] = [None] * len(captions)
        first_reason: list[str | None] = [None] * len(captions)
        if self.faithful is not None:
            self.faithful.prepare(list(captions))  # one parse per original caption, batched

        for i, raw in enumerate(self._ask_batched(inputs, strict=False, on_batch=on_batch)):
            cleaned, reason, verdict = self._check(raw, captions[i])
            if reason is None:
                results[i] = Generalized(cleaned, "llm").with_verdict(verdict)
            first_reason[i] = reason

        if "retry" in self.fallback:
            todo = [i for i, r in enumerate(results) if r is None]
            retry_inputs = {i: strip_specifics(inputs[i]) for i in todo}
            todo = [i for i in todo if retry_inputs[i]]
            if todo:
                raws = self._ask_batched([retry_inputs[i] for i in todo], strict=True)
                for i, raw in zip(todo, raws, strict=True):
                    cleaned, reason, verdict = self._check(raw, captions[i])
                    if reason is None:
                        results[i] = Generalized(cleaned, "retry", first_reason[i]).with_verdict(verdict)

        for i, result in enumerate(results):
            if result is not None:
                continue
            if "rule" in self.fallback:
                head = self.faithful.root_noun(captions[i]) if self.faithful is not None else None
                candidate = rule_generalize(inputs[i], max_words=self.max_words, head_noun=head)
                reason, verdict = self._judge(
                    candidate, captions[i], rejection_reason(candidate, captions[i], max_words=self.max_words))
                if reason is None:
                    results[i] = Generalized(candidate, "rule", first_reason[i]).with_verdict(verdict)
                    continue
            if "original" in self.fallback:
                verdict = self.faithful.check(captions[i], captions[i]) if self.faithful is not None else None
                results[i] = Generalized(captions[i], "original", first_reason[i]).with_verdict(verdict)
            else:
                results[i] = Generalized(None, "drop", first_reason[i])

        final = [r for r in results if r is not None]
        if self.target is not None and self.rounds > 0:
            self._raise_generality(captions, final)
        return final

    def _raise_generality(self, captions: Sequence[str], results: list[Generalized]) -> None:
        """Re-ask for captions scoring below the target (the paper's suggested score-guided loop)."""
        kept = [i for i, r in enumerate(results) if r.caption is not None]
        scores = dict(zip(kept, (s["generality"] for s in self.scorer.score_many([results[i].caption for i in kept])),
                          strict=True))
        for round_number in range(1, self.rounds + 1):
            low = [i for i in kept if scores[i] < self.target]
            if not low:
                break
            raws = self._ask_batched([results[i].caption for i in low], strict=True)
            candidates = {}
            verdicts = {}
            for i, raw in zip(low, raws, strict=True):
                cleaned, reason, verdicts[i] = self._check(raw, captions[i])
                if reason is None and cleaned.lower() != results[i].caption.lower():
                    candidates[i] = cleaned
            if not candidates:
                break
            new_scores = self.scorer.score_many(list(candidates.values()))
            for (i, text), score in zip(candidates.items(), new_scores, strict=True):
                if score["generality"] > scores[i]:
                    # Re-asking uses the strict prompt: a caption that came from the rule or the
                    # original before now comes from a (strict) LLM answer, i.e. the retry step.
                    step = results[i].step if results[i].step in ("llm", "retry") else "retry"
                    results[i] = Generalized(text, step, results[i].reason, round_number).with_verdict(verdicts[i])
                    scores[i] = score["generality"]
        log.debug("target generality %.2f: %d of %d captions below after re-asking", self.target,
                  sum(scores[i] < self.target for i in kept), len(kept))
