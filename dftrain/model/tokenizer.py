"""An offline CLIP tokenizer: byte-level BPE in CLIP's vocab.json + merges.txt format.

The merges are learned with the `tokenizers` library from a small corpus (synthetic
captions, object names, a basic English word list). The vocabulary starts like
CLIP's: the 256 byte symbols, the same 256 with the end-of-word marker "</w>",
then one token per merge, then <|startoftext|> and <|endoftext|>. Because every
byte symbol (with and without "</w>") is in the vocabulary, any text encodes,
including words never seen in training. `CLIPTokenizer.from_pretrained` loads it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"
END_OF_WORD = "</w>"
# CLIP's pre-tokenization: special tokens, contractions, letter runs, single digits, punctuation runs.
CLIP_SPLIT_PATTERN = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""

# A basic English vocabulary for image captions (generalized captions, prompts, fusion phrases).
BASIC_WORDS = """
a an the of in on at with and or for to from by over under near behind between above below into onto
is are was were be been being has have had do does did can could will would should may might must
this that these those it its they them their there here which who what where when how why not no yes
one two three four five six seven eight nine ten many few some all each every other another more most
photo photograph picture image painting drawing illustration sketch render poster print art artwork design
pattern texture background foreground scene view close up closeup portrait landscape logo icon symbol sign
shape object thing item product toy tool device machine vehicle building animal plant food drink clothing
man woman person people child boy girl baby family friend group crowd face hand head eye hair body
dog cat bird fish horse cow sheep pig chicken duck rabbit mouse lion tiger bear elephant monkey snake
tree flower grass leaf forest garden park field mountain hill river lake sea ocean beach island sky cloud
sun moon star rain snow ice fire water wind light shadow night day morning evening sunset sunrise
house home room kitchen bedroom door window wall floor roof table chair bed sofa lamp shelf box bag
car truck bus train boat ship plane bicycle bike road street bridge city town village country world
apple banana orange fruit vegetable bread cake pizza coffee tea cup mug glass bottle plate bowl spoon
shirt dress hat shoe coat jacket scarf umbrella key phone computer book paper card sticker mug pillow
red orange yellow green blue purple pink brown black white grey gray gold silver teal cyan magenta navy
big small large little tiny huge long short tall round square flat bright dark light colorful colourful
old new young modern vintage retro classic simple abstract beautiful pretty cute happy sad
circle square triangle star ring heart cross diamond hexagon pentagon crescent line stripe dot spot
striped checkered plain glowing textured gradient solid pattern geometric
sitting standing walking running flying swimming holding looking playing eating drinking smiling
""".split()


def training_corpus(captions: Iterable[str], extra_words: Iterable[str] = ()) -> list[str]:
    """Lines to learn merges from: the captions, plus the word list (repeated so common words merge whole)."""
    words = list(BASIC_WORDS) + list(extra_words)
    return list(captions) + [" ".join(words)] * 20


def learn_merges(corpus: Iterable[str], vocab_size: int) -> list[tuple[str, str]]:
    """Byte-level BPE merges learned with CLIP's normalization and pre-tokenization."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(end_of_word_suffix=END_OF_WORD, continuing_subword_prefix=""))
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(CLIP_SPLIT_PATTERN), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        end_of_word_suffix=END_OF_WORD,
    )
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    merges = json.loads(tokenizer.to_str())["model"]["merges"]
    # tokenizers writes merges as [a, b] pairs (or "a b" strings in older versions).
    return [tuple(m) if isinstance(m, list) else tuple(m.split(" ", 1)) for m in merges]


def byte_symbols() -> list[str]:
    """The 256 printable stand-ins for bytes, in CLIP/GPT-2 order."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    shift = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + shift)
            shift += 1
    return [chr(code) for code in codes]


def clip_vocab(merges: list[tuple[str, str]]) -> dict[str, int]:
    """CLIP's vocabulary layout: bytes, bytes + "</w>", merged tokens in merge order, then BOS/EOS."""
    symbols = byte_symbols()
    tokens = symbols + [s + END_OF_WORD for s in symbols]
    seen = set(tokens)
    for a, b in merges:
        merged = a + b
        if merged not in seen:
            tokens.append(merged)
            seen.add(merged)
    tokens += [BOS, EOS]
    return {token: index for index, token in enumerate(tokens)}


def valid_merges(merges: list[tuple[str, str]], vocab: dict[str, int]) -> list[tuple[str, str]]:
    """Keep merges whose parts are tokens (always true for merges learned on byte-level input)."""
    return [(a, b) for a, b in merges if a in vocab and b in vocab]


def write_clip_tokenizer(folder: str | Path, merges: list[tuple[str, str]], max_length: int = 77) -> Path:
    """Write vocab.json + merges.txt (CLIP format) and the transformers tokenizer files; returns the folder."""
    from transformers import CLIPTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = clip_vocab(merges)
    merges = valid_merges(merges, vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text(
        "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8"
    )
    tokenizer = CLIPTokenizer(
        vocab=vocab,
        merges=list(merges),
        bos_token=BOS,
        eos_token=EOS,
        unk_token=EOS,
        pad_token=EOS,
        model_max_length=max_length,
    )
    tokenizer.save_pretrained(folder)
    return folder


def build_tokenizer(folder: str | Path, captions: Iterable[str], extra_words: Iterable[str] = (),
                    vocab_size: int = 2048, max_length: int = 77) -> Path:
    """Learn merges from captions + basic words and write a CLIP tokenizer folder."""
    merges = learn_merges(training_corpus(captions, extra_words), vocab_size)
    return write_clip_tokenizer(folder, merges, max_length=max_length)
