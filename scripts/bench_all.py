"""make bench: run every benchmark and print one table of figures, baselines and ratios (same run each)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPTS = ("bench_producer.py", "bench_aggregator.py", "bench_export.py")
HERE = Path(__file__).resolve().parent


def run(script: str) -> dict:
    result = subprocess.run([sys.executable, str(HERE / script), "--json"], capture_output=True, text=True, check=False,
                            env={**os.environ, "PYTHONPATH": str(HERE.parent)})
    if result.returncode != 0:
        raise SystemExit(f"bench: {script} failed:\n{result.stderr.strip()}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def markdown(results: list[dict]) -> str:
    lines = ["| benchmark | figure | value | seed-style baseline | ratio | target |", "|---|---|---|---|---|---|"]
    for result in results:
        for figure in result["figures"]:
            baseline = "" if figure["baseline"] is None else f"{figure['baseline']:,.1f} ({figure['baseline_name']})"
            ratio = "" if figure["ratio"] is None else f"{figure['ratio']:.2f}x"
            lines.append(f"| {result['title']} | {figure['name']} | {figure['value']:,.1f} {figure['unit']} | "
                         f"{baseline} | {ratio} | {figure['target']} |")
    return "\n".join(lines)


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()
    results = []
    for script in SCRIPTS:
        print(f"bench: running {script} ...", file=sys.stderr, flush=True)
        results.append(run(script))
    print(f"machine: {results[0]['machine']}")
    print(markdown(results))


if __name__ == "__main__":
    main()
