"""The table every bench script ends with: what, our figure, the machine's yardstick, the target."""
from __future__ import annotations

from typing import Sequence

HEADER = ("what", "ours", "reference (same run)", "target")


def print_table(rows: Sequence[tuple[str, str, str, str]]) -> None:
    widths = [max(len(r[i]) for r in [*rows, HEADER]) for i in range(len(HEADER))]
    print()
    print(" | ".join(h.ljust(w) for h, w in zip(HEADER, widths)))
    print("-+-".join("-" * w for w in widths))
    for r in rows:
        print(" | ".join(c.ljust(w) for c, w in zip(r, widths)))
