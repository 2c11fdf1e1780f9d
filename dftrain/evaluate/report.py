"""Writing an evaluation's outputs: report.json, report.md, the histogram and the copy grid."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from dftrain.files import atomic_path, atomic_write_text

HISTOGRAM_PNG = "similarity_histogram.png"
GRID_PNG = "most_copied.png"


def write_json_atomic(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_jsonl_atomic(path: Path, rows) -> None:
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def similarity_histogram(path: Path, gen_sims: np.ndarray, bg_sims: np.ndarray | None, threshold: float,
                         descriptor: str) -> None:
    """Overlaid densities of sim(generation, nearest train) and sim(train, nearest other train)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    bins = np.linspace(-0.2, 1.0, 49)
    ax.hist(np.clip(gen_sims, -0.2, 1.0), bins=bins, density=True, alpha=0.6,
            label=f"generation vs train (n={len(gen_sims)})")
    if bg_sims is not None and len(bg_sims):
        ax.hist(np.clip(bg_sims, -0.2, 1.0), bins=bins, density=True, alpha=0.6,
                label=f"train vs other train (n={len(bg_sims)})")
    ax.axvline(threshold, color="k", linestyle="--", linewidth=1, label=f"copy threshold {threshold:g}")
    ax.set_xlabel(f"max cosine similarity ({descriptor} descriptor)")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def copy_grid(path: Path, rows: list[tuple[Image.Image, Image.Image | None, str]], thumb: int = 128) -> None:
    """One row per generation: the generation, its nearest training image, and a label."""
    label_h, header = 14, 16
    width, height = 2 * thumb + 12, header + max(1, len(rows)) * (thumb + label_h + 6)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((2, 2), "generation", fill="black")
    draw.text((thumb + 10, 2), "nearest training image", fill="black")
    for i, (gen, match, label) in enumerate(rows):
        y = header + i * (thumb + label_h + 6)
        canvas.paste(_thumbnail(gen, thumb), (2, y))
        if match is not None:
            canvas.paste(_thumbnail(match, thumb), (thumb + 10, y))
        draw.text((2, y + thumb + 2), label[:40], fill="black")
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")


def _thumbnail(img: Image.Image, size: int) -> Image.Image:
    img = img.convert("RGB")
    scale = size / max(img.size)  # fit, enlarging small images too (64 px generations)
    img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                     Image.Resampling.BICUBIC)
    tile = Image.new("RGB", (size, size), (230, 230, 230))
    tile.paste(img, ((size - img.width) // 2, (size - img.height) // 2))
    return tile


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def report_markdown(report: dict, top: list[dict]) -> str:
    r = report
    lines = [
        "# Replication evaluation",
        "",
        f"- generations: `{r['generations_dir']}` ({r['n_generations']} images)",
        f"- training set: `{r['train_dir']}` ({r['n_train']} images)",
        f"- descriptor: `{r['descriptor']}` (dim {r['descriptor_dim']}), search: {r['search']}, "
        f"copy threshold {r['threshold']:g}",
        "",
        "| figure | value |",
        "| --- | --- |",
    ]
    rows = [
        ("similarity to nearest training image, mean", r["sim_mean"]),
        ("std", r["sim_std"]),
        ("75th percentile", r["sim_p75"]),
        ("90th percentile", r["sim_p90"]),
        ("95th percentile (replication score)", r["sim_p95"]),
        ("fraction above 0.5 (frac_above_0_5)", r["frac_above_0_5"]),
        (f"fraction above the copy threshold {r['threshold']:g}", r.get("frac_above_threshold")),
        ("background (train vs other train), mean", r["bg_sim_mean"]),
        ("background 95th percentile", r["bg_sim_p95"]),
        ("own-caption match rate", r["own_match_rate"]),
        ("diversity (mean 1 - cos within a prompt)", r["diversity"]),
        ("FD over embedded descriptors (fd_embedded)", r["fd_embedded"]),
        ("FID", r["fid"]),
    ]
    lines += [f"| {name} | {_fmt(value)} |" for name, value in rows]
    if r.get("fid") is None:
        lines += ["", f"FID: {r.get('fid_reason', 'not computed')}"]
    lines += [
        "",
        f"![similarity histogram]({HISTOGRAM_PNG})",
        "",
        "## Most-copied generations",
        "",
        f"![most copied generations beside their nearest training image]({GRID_PNG})",
        "",
        "| generation | nearest training image | similarity | own caption |",
        "| --- | --- | --- | --- |",
    ]
    lines += [f"| `{m['file']}` | `{m['best_key']}` | {m['best_sim']:.4f} | {_fmt(m['own'])} |" for m in top]
    if r.get("skipped"):
        lines += ["", f"Skipped images: {r['skipped']}"]
    return "\n".join(lines) + "\n"
