"""The round-robin timer the whole-job benchmarks share, and the markdown table they all print."""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable, Sequence


def round_robin(paths: dict[str, Callable[[Path], object]], rounds: int, tmp: Path) -> dict[str, list[float]]:
    """Return {path name: seconds per round}: every round runs each path once, in turn, into its own TMP/out_* folder.

    Running the paths in turn makes the load of a shared machine hit them alike; report medians.
    """
    times: dict[str, list[float]] = {name: [] for name in paths}
    for r in range(rounds):
        for name, fn in paths.items():
            start = time.perf_counter()
            fn(tmp / f"out_{name.replace(' ', '_')}_{r}")
            times[name].append(time.perf_counter() - start)
            print(f"round {r + 1}/{rounds} {name}: {times[name][-1]:.2f} s", file=sys.stderr, flush=True)
    return times


def print_table(rows: Sequence[dict], columns: Sequence[tuple[str, str, str]]) -> None:
    """Print rows as a markdown table; columns: (header, row key, format spec such as ".2f")."""
    print("| " + " | ".join(header for header, _, _ in columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(format(row[key], spec) for _, key, spec in columns) + " |")
