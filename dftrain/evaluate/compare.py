"""`dftrain compare`: evaluation runs side by side against a baseline run.

Replication reduction (%) = 100 * (baseline - run) / baseline, for sim_p95, frac_above_0_5 and
frac_above_threshold (the descriptor's own copy threshold):
positive means the run copies less than the baseline. Deltas (run - baseline) for FID,
fd_embedded and diversity.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from dftrain.errors import DftrainError

COLUMNS = (
    "run", "n_generations", "descriptor", "sim_mean", "sim_p95", "frac_above_0_5", "frac_above_threshold", "bg_sim_p95",
    "own_match_rate", "fid", "fd_embedded", "diversity",
    "sim_p95_reduction_pct", "frac_above_0_5_reduction_pct", "frac_above_threshold_reduction_pct", "fid_delta", "fd_embedded_delta", "diversity_delta",
)


def load_report(run_dir: str | Path) -> dict:
    path = Path(run_dir) / "report.json"
    if not path.is_file():
        raise DftrainError(f"{run_dir} is not an evaluation output folder (no report.json)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DftrainError(f"{path} is not valid JSON: {exc}") from exc


def relative_change_pct(baseline: float | None, value: float | None) -> float | None:
    """The signed change in percent, 100 (value - baseline) / |baseline|: negative when the value is lower.
    None when undefined (a missing value or a zero baseline)."""
    if baseline is None or value is None or baseline == 0:
        return None
    return (value - baseline) / abs(baseline) * 100.0


def reduction_pct(baseline: float | None, value: float | None) -> float | None:
    """How much lower than the baseline, in percent: -relative_change_pct (positive when the value is lower)."""
    change = relative_change_pct(baseline, value)
    return None if change is None else -change


def delta(baseline: float | None, value: float | None) -> float | None:
    return None if baseline is None or value is None else value - baseline


def compare_reports(reports: dict[str, dict], baseline: str) -> list[dict]:
    """One row per run (insertion order), with reductions and deltas against `baseline`."""
    if baseline not in reports:
        raise DftrainError(f"baseline {baseline!r} is not one of the runs: {', '.join(reports)}")
    ids = {r.get("descriptor_id", r.get("descriptor")) for r in reports.values()}
    if len(ids) > 1:
        raise DftrainError(f"runs were evaluated with different descriptors ({', '.join(sorted(map(str, ids)))}); "
                           "their similarities are not comparable")
    base = reports[baseline]
    rows = []
    for name, r in reports.items():
        rows.append({
            "run": name,
            "n_generations": r.get("n_generations"),
            "descriptor": r.get("descriptor"),
            "sim_mean": r.get("sim_mean"),
            "sim_p95": r.get("sim_p95"),
            "frac_above_0_5": r.get("frac_above_0_5"),
            "frac_above_threshold": r.get("frac_above_threshold"),
            "bg_sim_p95": r.get("bg_sim_p95"),
            "own_match_rate": r.get("own_match_rate"),
            "fid": r.get("fid"),
            "fd_embedded": r.get("fd_embedded"),
            "diversity": r.get("diversity"),
            "sim_p95_reduction_pct": reduction_pct(base.get("sim_p95"), r.get("sim_p95")),
            "frac_above_0_5_reduction_pct": reduction_pct(base.get("frac_above_0_5"), r.get("frac_above_0_5")),
            "frac_above_threshold_reduction_pct": reduction_pct(base.get("frac_above_threshold"),
                                                                r.get("frac_above_threshold")),
            "fid_delta": delta(base.get("fid"), r.get("fid")),
            "fd_embedded_delta": delta(base.get("fd_embedded"), r.get("fd_embedded")),
            "diversity_delta": delta(base.get("diversity"), r.get("diversity")),
        })
    return rows


def _cell(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 100 else f"{value:.1f}"
    return str(value)


def markdown_table(rows: list[dict], baseline: str) -> str:
    lines = [f"Baseline: `{baseline}`. Reductions in % of the baseline (positive = copies less); "
             "deltas are run - baseline.", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cell(row[c]) for c in COLUMNS) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def csv_table(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: "" if row[c] is None else row[c] for c in COLUMNS})
    return buf.getvalue()


def run_name(path: Path, taken: set[str]) -> str:
    name = path.name or str(path)
    return name if name not in taken else str(path)


def compare(run_dirs: list[str | Path], baseline: str | Path, out_dir: str | Path | None = None, *,
            overwrite: bool = False) -> tuple[str, str]:
    """Markdown and CSV tables; written to out_dir/compare.md and compare.csv when out_dir is given."""
    paths = [Path(p) for p in run_dirs]
    base_path = Path(baseline)
    if base_path.resolve() not in {p.resolve() for p in paths}:
        paths.insert(0, base_path)
    reports: dict[str, dict] = {}
    names: dict[Path, str] = {}
    for p in paths:
        name = run_name(p, set(reports))
        reports[name] = load_report(p)
        names[p.resolve()] = name
    rows = compare_reports(reports, names[base_path.resolve()])
    md, table = markdown_table(rows, names[base_path.resolve()]), csv_table(rows)
    if out_dir is not None:
        from dftrain.outputs import claim_output

        out = Path(out_dir)
        with claim_output(out, "compare", overwrite=overwrite):
            (out / "compare.md").write_text(md, encoding="utf-8")
            (out / "compare.csv").write_text(table, encoding="utf-8")
    return md, table
