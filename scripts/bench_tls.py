"""What TLS costs: the fleet drain (bench_fleet.py: a 10,000-sensor backfill, then 2 workers
draining it) with every process on a plain connection and with every process on TLS with client
certificates, alternately in the same run, against the same kind of private redis-server.

Figures: drain readings/s, Redis CPU per reading (producer + aggregator: TLS moves encryption
into Redis's own thread) and worker CPU per reading, plain as the baseline of TLS.
"""

from __future__ import annotations

import math
import sys

from bench_common import Figure, parser, print_figures
from bench_fleet import drain, run_phase

FIGURES = {"readings/s": "drain readings/s", "producer + aggregator Redis CPU": "Redis CPU (producer + aggregator)",
           "worker CPU": "worker CPU"}


def best(rounds: list[dict[str, float]], name: str) -> float:
    """The round with the most readings/s gives every figure, so they describe one run."""
    chosen = max(rounds, key=lambda figures: figures.get("readings/s", -math.inf))
    return chosen.get(name, math.nan)


def main() -> int:
    arguments = parser(__doc__)
    arguments.add_argument("--sensors", type=int, default=10_000)
    arguments.add_argument("--readings", type=int, default=30, help="readings per sensor (default 30)")
    arguments.add_argument("--rounds", type=int, default=3, help="alternating plain/TLS rounds (best of each; default 3)")
    args = arguments.parse_args()
    rounds: dict[bool, list[dict[str, float]]] = {False: [], True: []}
    for _ in range(args.rounds):
        for tls in (False, True):
            figures = run_phase(f"{'TLS' if tls else 'plain'} drain", drain, 2, args.sensors, args.readings, tls)
            rounds[tls].append({figure.name.split(": ", 1)[1]: figure.value for figure in figures})
    results = []
    for name, title in FIGURES.items():
        unit = "readings/s" if name == "readings/s" else "µs/reading"
        plain, tls = best(rounds[False], name), best(rounds[True], name)
        results.append(Figure(f"TLS {title}", tls, unit, f"plain {title}", plain))
    print_figures(f"TLS cost, fleet drain of {args.sensors:,} sensors x {args.readings}, 2 workers", results, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
