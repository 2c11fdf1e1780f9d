"""The one sentence at the top of an experiment's report: how much the baseline copies and how much
each variant changes that, read off the summary (never written by hand)."""

from __future__ import annotations


def _pct(entry: dict) -> str:
    change = entry["change_pct"]["mean"]
    if change is None:
        return "n/a"
    text = f"{change:+.0f}%"
    return text + (f" (p {entry['p_value']:.2g})" if entry.get("p_value") is not None else "")


def headline(summary: dict, changes: dict, descriptor: str | None) -> str:
    """'The baseline's copying: sim_p95 0.91 (sscd descriptor) with 80% of generations above 0.5 (95% for prompts of
    duplicated images); against it, over 5 seeds: generalized sim_p95 -12% (p 0.01), frac > 0.5 -40% (p 0.02); ...'"""
    base = summary.get("baseline")
    if not base or base["sim_p95"]["n"] == 0:
        return "The baseline did not finish, so no reduction can be measured."
    sim, frac = base["sim_p95"]["mean"], base["frac_above_0_5"]["mean"]
    text = f"The baseline's copying: sim_p95 {sim:.2f} ({descriptor or 'copy'} descriptor)"
    if frac is not None:
        text += f" with {frac:.0%} of generations above 0.5"
    dup = base.get("dup_frac_above_0_5", {}).get("mean")
    if dup is not None:
        text += f" ({dup:.0%} for prompts of duplicated images)"
    parts = [f"{name} sim_p95 {_pct(entry['sim_p95'])}, frac > 0.5 {_pct(entry['frac_above_0_5'])}"
             for name, entry in changes.items() if summary[name]["sim_p95"]["n"]]
    if not parts:
        return text + "; no other variant finished."
    return text + f"; against it, over {base['sim_p95']['n']} seed(s): " + "; ".join(parts) + "."
