"""Reading captions, writing scores (JSON lines, atomically), summary statistics, histogram."""

from __future__ import annotations

import json
import logging
import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path

from dftrain.errors import DftrainError
from dftrain.files import atomic_path

log = logging.getLogger("dftrain.score")


def read_captions_file(path: str | Path) -> list[str]:
    """One caption per line (UTF-8; blank lines are empty captions and are scored as such).

    Lines that are not valid UTF-8 are decoded with U+FFFD replacements and logged
    by line number rather than dropped, so output line i always matches input line i.
    """
    path = Path(path)
    if not path.is_file():
        raise DftrainError(f"captions file not found: {path}")
    captions, bad_lines = [], []
    for number, raw in enumerate(path.read_bytes().splitlines(), start=1):
        try:
            captions.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            bad_lines.append(number)
            captions.append(raw.decode("utf-8", errors="replace"))
    if bad_lines:
        log.warning(
            "%d line(s) of %s are not UTF-8 (decoded with replacements): %s",
            len(bad_lines),
            path,
            bad_lines[:20],
        )
    if captions and captions[0].startswith("\ufeff"):
        captions[0] = captions[0][1:]  # byte-order mark
    return captions


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> Path:
    """Write rows as JSON lines to a temporary file, then rename: a crash leaves no half file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def summarize(values: Sequence[float | None]) -> dict:
    """n, missing, mean, min, quartiles, max of the non-missing values."""
    present = sorted(v for v in values if v is not None)
    summary: dict = {"n": len(present), "missing": len(values) - len(present)}
    if not present:
        return summary
    if len(present) > 1:
        q1, q2, q3 = statistics.quantiles(present, n=4, method="inclusive")
    else:
        q1 = q2 = q3 = present[0]
    summary.update(
        mean=round(statistics.fmean(present), 4),
        min=present[0],
        q25=round(q1, 4),
        median=round(q2, 4),
        q75=round(q3, 4),
        max=present[-1],
    )
    return summary


def summarize_rows(rows: Sequence[dict], keys: Sequence[str]) -> dict:
    return {key: summarize([row.get(key) for row in rows]) for key in keys}


def format_summary(summary: dict, title: str = "") -> str:
    lines = [title] if title else []
    width = max([len("score"), *map(len, summary)]) + 2
    lines.append(f"{'score':<{width}}{'n':>8}{'mean':>8}{'q25':>8}{'median':>8}{'q75':>8}")
    for key, s in summary.items():
        if s.get("n"):
            lines.append(
                f"{key:<{width}}{s['n']:>8}{s['mean']:>8.2f}{s['q25']:>8.2f}{s['median']:>8.2f}{s['q75']:>8.2f}"
            )
        else:
            lines.append(f"{key:<{width}}{0:>8}{'-':>8}")
    return "\n".join(lines)


def plot_histogram(groups: dict[str, Sequence[float | None]], path: str | Path, title: str = "") -> Path:
    """One overlaid histogram of generality per group (e.g. training caption vs original), PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    bins = [i * 0.25 for i in range(41)]
    for label, values in groups.items():
        present = [v for v in values if v is not None]
        if present:
            ax.hist(present, bins=bins, alpha=0.55, label=f"{label} (n={len(present)})")
    ax.set_xlim(0, 10)
    ax.set_xlabel("generality (0 = specific, 10 = general)")
    ax.set_ylabel("captions")
    ax.set_title(title or "caption generality")
    if groups:
        ax.legend()
    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    return path
