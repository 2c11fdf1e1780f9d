"""Prompts that ask an LLM for a general version of a caption.

Two styles:
- chat (the paper's prompt) for real instruction models: one user message,
  `Make this caption of an image extremely general (result in less than 5 words)："<caption>"`,
  character for character as the paper's openai_api_sample.py has it: a FULL-WIDTH colon (U+FF1A)
  and no space before the quote; the caption first loses leading and trailing punctuation while it
  both starts and ends with some, as that script does.
- few-shot completion, the embedded default: lines `specific => general`, then
  `<caption> =>`; the model continues and is stopped at the newline. SmolLM2-135M echoes
  the caption under the paper's prompt but follows the few-shot pattern.

A retry uses a stricter prompt: the chat style adds explicit rules; both styles feed
the caption with its names, numbers and codes already removed, so that the model
cannot copy them again.
"""

from __future__ import annotations

import hashlib
import string
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from dftrain.errors import ConfigError

PAPER_TEMPLATE = 'Make this caption of an image extremely general (result in less than 5 words)\uff1a"{caption}"'
STRICT_TEMPLATE = (
    "Describe this image caption in at most {max_words} plain common words. No names, brands, places, "
    'numbers or codes. Answer with the description only, nothing else: "{caption}"'
)
FEW_SHOT_SEPARATOR = " =>"
DEFAULT_FEW_SHOT = "fewshot_general.txt"
# A generalized caption is a few words: this bounds the generated tokens.
MAX_NEW_TOKENS = 16


def load_few_shot(path: str | Path | None = None) -> list[tuple[str, str]]:
    """(specific, general) pairs from a `specific => general` file; the packaged list by default."""
    if path is None:
        text = resources.files("dftrain").joinpath("data", DEFAULT_FEW_SHOT).read_text(encoding="utf-8")
        source = DEFAULT_FEW_SHOT
    else:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"few-shot file not found: {p}")
        text, source = p.read_text(encoding="utf-8"), str(p)
    pairs = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if "=>" not in line:
            raise ConfigError(f"{source}:{number}: expected `specific caption => general caption`")
        specific, general = (part.strip() for part in line.split("=>", 1))
        if not specific or not general:
            raise ConfigError(f"{source}:{number}: both sides of `=>` must be non-empty")
        pairs.append((specific, general))
    if not pairs:
        raise ConfigError(f"{source}: no few-shot lines")
    return pairs


@dataclass(frozen=True)
class PromptSpec:
    """How captions are turned into prompts: `mode` is "chat" or "fewshot"."""

    mode: str
    template: str = PAPER_TEMPLATE
    few_shot: tuple[tuple[str, str], ...] = ()
    max_words: int = 4

    @property
    def header(self) -> str:
        """The shared few-shot block (ends with a newline, so backends can cache it)."""
        return "".join(f"{s}{FEW_SHOT_SEPARATOR} {g}\n" for s, g in self.few_shot)

    def hash(self) -> str:
        """Short hash of everything that shapes the prompts (recorded with every caption)."""
        h = hashlib.sha256()
        for part in (self.mode, self.template, STRICT_TEMPLATE, self.header, str(self.max_words)):
            h.update(part.encode("utf-8") + b"\0")
        return h.hexdigest()[:16]

    def completion_prompts(self, captions: list[str]) -> list[str]:
        return [f"{self.header}{_one_line(c)}{FEW_SHOT_SEPARATOR}" for c in captions]

    def conversations(self, captions: list[str], *, strict: bool = False) -> list[list[dict]]:
        template = STRICT_TEMPLATE if strict else self.template
        prepare = paper_strip if template == PAPER_TEMPLATE else _one_line
        return [[{"role": "user", "content": template.format(caption=prepare(c), max_words=self.max_words)}]
                for c in captions]


def paper_strip(caption: str) -> str:
    """The paper's caption preparation: while the caption starts AND ends with ASCII punctuation,
    drop the first and the last punctuation character ('"A dog."' -> 'A dog'; 'A dog.' is kept)."""
    text = _one_line(caption)
    while len(text) > 1 and text[0] in string.punctuation and text[-1] in string.punctuation:
        text = text[1:-1]
    return text


def _one_line(caption: str) -> str:
    # A newline inside a caption would end the few-shot line early.
    return " ".join(caption.split())


def make_prompt_spec(backend_name: str, *, prompt_template: str | None = None, few_shot: str | Path | None = None,
                     max_words: int = 4) -> PromptSpec:
    """The prompt style for a backend: embedded -> few-shot, others -> the paper's chat prompt.

    `prompt_template` (must contain {caption}) selects chat; `few_shot` (a file) selects
    completion; giving both is an error.
    """
    if prompt_template is not None and few_shot is not None:
        raise ConfigError("give either --prompt-template (chat) or --few-shot (completion), not both")
    if prompt_template is not None:
        if "{caption}" not in prompt_template:
            raise ConfigError("--prompt-template must contain {caption}")
        try:
            prompt_template.format(caption="x", max_words=max_words)
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(f"--prompt-template is not a valid template ({exc}); escape braces as {{ }}") from exc
        return PromptSpec("chat", template=prompt_template, max_words=max_words)
    if few_shot is not None or backend_name == "embedded":
        return PromptSpec("fewshot", few_shot=tuple(load_few_shot(few_shot)), max_words=max_words)
    return PromptSpec("chat", template=PAPER_TEMPLATE, max_words=max_words)


def ask(backend, spec: PromptSpec, captions: list[str], *, strict: bool = False) -> list[str]:
    """Raw LLM outputs for captions under a prompt spec (one backend call, one batch)."""
    if spec.mode == "fewshot":
        return backend.complete(spec.completion_prompts(captions), max_new_tokens=MAX_NEW_TOKENS, stop=["\n"])
    return backend.chat(spec.conversations(captions, strict=strict), max_new_tokens=MAX_NEW_TOKENS)
