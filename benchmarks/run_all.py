"""Run every benchmark (benchmarks/bench_*.py), each in its own process, and collect the JSON.

    python -m benchmarks.run_all [--quick] [--only shards,train]

Each benchmark writes benchmarks/results/<name>.json itself; this runner adds
benchmarks/results/all.json with every result (or the error of one that failed)
and exits non-zero if any failed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def discover() -> list[str]:
    return sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))


def run_one(name: str, quick: bool) -> dict:
    code = f"import json; from benchmarks.bench_{name} import main; main(quick={quick!r})"
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], cwd=HERE.parent)
    elapsed = round(time.perf_counter() - started, 1)
    result_file = RESULTS / f"{name}.json"
    if proc.returncode != 0 or not result_file.exists():
        return {"ok": False, "returncode": proc.returncode, "seconds": elapsed}
    return {"ok": True, "seconds": elapsed, "result": json.loads(result_file.read_text())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    parser.add_argument("--only", default="", help="comma-separated benchmark names")
    args = parser.parse_args()
    names = [n for n in discover() if not args.only or n in args.only.split(",")]
    RESULTS.mkdir(exist_ok=True)
    summary = {}
    for name in names:
        print(f"== benchmark {name}", flush=True)
        summary[name] = run_one(name, args.quick)
    (RESULTS / "all.json").write_text(json.dumps(summary, indent=2))
    failed = [n for n, r in summary.items() if not r["ok"]]
    print(json.dumps({n: {"ok": r["ok"], "seconds": r["seconds"]} for n, r in summary.items()}, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
