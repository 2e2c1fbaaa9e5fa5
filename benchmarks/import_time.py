"""What importing the zoo costs: `python benchmarks/import_time.py` (run on an idle machine).

For each statement: in-process seconds after interpreter start (median of 5 fresh interpreters) and
the cumulative microseconds `python -X importtime` reports for its top-level imports.
"""
from __future__ import annotations

import re
import statistics
import subprocess
import sys

STATEMENTS = ("import torch", "import zoo", "import zoo.core", "import zoo.upcycling", "import zoo.models")
RUNS = 5


def wall_seconds(statement: str) -> float:
    code = f"import time; t = time.perf_counter(); {statement}; print(time.perf_counter() - t)"
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def importtime_seconds(statement: str) -> float:
    err = subprocess.run([sys.executable, "-X", "importtime", "-c", statement], capture_output=True, text=True, check=True).stderr
    total = 0
    for line in err.splitlines():  # "import time: self [us] | cumulative | imported package"; top level = no indent
        match = re.match(r"import time:\s+\d+ \|\s+(\d+) \| (\S.*)$", line)
        if match and not match.group(2).startswith(" "):
            total += int(match.group(1))
    return total / 1e6


def main() -> None:
    print(f"{'statement':24} {'wall s (median of 5)':>22} {'-X importtime s':>16}")
    for statement in STATEMENTS:
        wall = statistics.median(wall_seconds(statement) for _ in range(RUNS))
        print(f"{statement:24} {wall:22.2f} {importtime_seconds(statement):16.2f}")


if __name__ == "__main__":
    main()
