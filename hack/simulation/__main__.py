"""``make simulate``: play every scenario and write bench/simulation.md.

    python -m simulation [--secrets N] [--days D] [--only NAME ...] [--out PATH]

``--secrets`` scales every scenario (default: each scenario's own size: 10,000 Secrets for
the CDN scenario, 1,000 for the others). The run fails (exit 1) when a promise is broken:
an expired or wrong staple in a Secret, two requests about one certificate less than a
minute apart, more than two requests per CA update period in the CDN scenario, a revocation
never seen, a healthy tenant never stapled.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys
from pathlib import Path

from simulation.report import broken_promises, markdown
from simulation.scenarios import SCENARIOS
from simulation.world import simulate


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="simulation", description=__doc__)
    parser.add_argument("--secrets", type=int, default=None)
    parser.add_argument("--days", type=float, default=None)
    parser.add_argument("--only", nargs="*", default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    chosen = [s for s in SCENARIOS if not args.only or s.name in args.only]
    results = []
    for chosen_one in chosen:
        scenario = chosen_one.scaled(args.secrets or chosen_one.secrets, args.days)
        outcome = simulate(scenario)
        results.append((scenario, outcome))
        print(f"{scenario.name}: {outcome.secrets} Secrets, {outcome.days:g} days in "
              f"{outcome.wall_seconds:.1f} s", flush=True)  # fmt: skip
    today = datetime.date.today().isoformat()
    text = markdown(results, measured=f"{today} on {_cpu_model()}")
    if args.out is not None:
        args.out.write_text(text)
    print(text)
    broken = broken_promises(results)
    for line in broken:
        print(f"BROKEN: {line}", file=sys.stderr)
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
