"""make bench: run every benchmark and print one table of figures, baselines and ratios (same run each)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPTS = ("bench_producer.py", "bench_aggregator.py", "bench_export.py", "bench_fleet.py", "bench_lossy.py",
           "bench_mqtt.py", "bench_web.py", "bench_tls.py", "bench_notify.py", "bench_late.py")
HERE = Path(__file__).resolve().parent
# The fleet benchmark's headline figures, with the targets (2 cores). Redis CPU targets
# were set where the floor (plain XADD, XREADGROUP, XACK, HSET per reading) measured 10 µs: as
# ratios to the floor measured in the same run they hold on any machine.
FLEET_TARGETS = {
    "drain 1w: readings/s": "",
    "drain 2w: readings/s": ">= 50,000/s",
    "drain 2w: producer + aggregator Redis CPU": "<= 15 µs/reading",
    "drain 2w: worker CPU": "",
    "live 2w: backlog age p50": "",
    "live 2w: backlog age p99": "<= 100 ms",
    "live 2w: Redis CPU (producer + aggregator)": "<= 15 µs/reading",
    "floor: Redis CPU per reading, sum": "",
    "drain 2w: producer + aggregator Redis CPU / floor": "<= 1.5x",
    "live 2w: Redis CPU (producer + aggregator) / floor": "<= 1.5x",
}


def run(script: str) -> dict:
    result = subprocess.run([sys.executable, str(HERE / script), "--json"], capture_output=True, text=True, check=False,
                            env={**os.environ, "PYTHONPATH": str(HERE.parent)})
    if result.returncode != 0:
        raise SystemExit(f"bench: {script} failed:\n{result.stderr.strip()}")
    output = json.loads(result.stdout.strip().splitlines()[-1])
    return fleet_result(output) if isinstance(output, list) else output


def fleet_result(figures: list[dict]) -> dict:
    """bench_fleet.py prints a plain list of figures; keep the headline ones, in the table's form."""
    chosen = [{"name": figure["name"], "value": figure["value"] if figure["value"] is not None else float("nan"),
               "unit": figure["unit"], "baseline": None, "baseline_name": "", "ratio": None,
               "target": FLEET_TARGETS[figure["name"]]}
              for figure in figures if figure["name"] in FLEET_TARGETS]
    return {"title": "fleet, 10,000 sensors", "machine": "", "figures": chosen}


def markdown(results: list[dict]) -> str:
    lines = ["| benchmark | figure | value | seed-style baseline | ratio | target |", "|---|---|---|---|---|---|"]
    for result in results:
        for figure in result["figures"]:
            baseline = "" if figure["baseline"] is None else f"{figure['baseline']:,.1f} ({figure['baseline_name']})"
            ratio = "" if figure["ratio"] is None else f"{figure['ratio']:.2f}x"
            digits = 2 if figure["unit"] == "x" else 1
            lines.append(f"| {result['title']} | {figure['name']} | {figure['value']:,.{digits}f} {figure['unit']} | "
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
