"""Reads the skip lines of a pytest log (``-ra``: ``SKIPPED [N] path:line: reason``).

``skips.py check LOG``: fails unless every skip names the extra that would run it (``pip install
"sprint_control[...]"``), so a bare install skips only what an extra brings.
``skips.py files LOG``: prints the test files with a skip, one a line, for a second pass with the extras.
"""

from __future__ import annotations

import re
import sys

SKIP = re.compile(r"^SKIPPED \[(\d+)\] ([^:]+):\d+: (.*)$")
NAMES_AN_EXTRA = re.compile(r'pip install "sprint_control\[[\w,-]+\]"')


def skips(path: str) -> list[tuple[int, str, str]]:
    with open(path, encoding="utf-8", errors="replace") as f:
        return [(int(m.group(1)), m.group(2), m.group(3)) for m in map(SKIP.match, f) if m]


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("check", "files"):
        print("usage: skips.py check|files LOG", file=sys.stderr)
        return 2
    found = skips(argv[1])
    if argv[0] == "files":
        for path in sorted({p for _, p, _ in found}):
            print(path)
        return 0
    unnamed = [(n, p, r) for n, p, r in found if not NAMES_AN_EXTRA.search(r)]
    print(f"{sum(n for n, _, _ in found)} skipped, {sum(n for n, _, _ in unnamed)} without the extra to install")
    for n, p, r in unnamed:
        print(f"  [{n}] {p}: {r}")
    return 1 if unnamed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
