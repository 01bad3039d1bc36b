"""Prints one of the two commands of README.md's Quick start, so CI runs exactly what a user types.

``python .ci/readme_command.py demo`` gives the first (install and run the demo), ``test`` the second
(install the test extra and run the suite). tests/test_layout.py holds the README to this shape.
"""

from __future__ import annotations

import os
import re
import sys

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def quick_start_commands(text: str) -> list[str]:
    """The lines of the first ```bash block under '## Quick start'."""
    section = re.search(r"^## Quick start\n(.*?)(?=^## )", text, flags=re.M | re.S)
    if section is None:
        raise SystemExit("README.md has no '## Quick start' section")
    block = re.search(r"```bash\n(.*?)```", section.group(1), flags=re.S)
    if block is None:
        raise SystemExit("README.md's Quick start has no ```bash block")
    return [line.strip() for line in block.group(1).splitlines() if line.strip()]


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in ("demo", "test"):
        print("usage: readme_command.py demo|test", file=sys.stderr)
        return 2
    with open(README, encoding="utf-8") as f:
        commands = quick_start_commands(f.read())
    if len(commands) != 2:
        raise SystemExit(f"README.md's Quick start has {len(commands)} commands, expected 2 (demo, test)")
    print(commands[0 if argv[0] == "demo" else 1])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
