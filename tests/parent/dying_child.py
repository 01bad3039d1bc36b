"""A Sprint stand-in that writes one kind of fatal log and exits with status 1 before it answers
``init`` (the parent's SprintChildError must lead with the cause, not the last line).

``dying_child.py KIND [Sprint args...]``; KIND: ``xml`` (RASR's XML critical error over several
lines), ``xml-one-line``, ``plain`` (``critical error: ...``), ``error`` (an ``error:`` line),
``traceback`` (a Python exception), ``nothing`` (no cause in the output), ``progress`` (50 MB of
progress-bar redraws ended by "\\r" only), ``flood`` (50 MB without any line end)."""

import sys

CE = "Generic CrossEntropyCriterion::getErrorSignal not implemented yet."
LOGS = {
    "xml": ['<?xml version="1.0" encoding="UTF-8"?>', "<sprint>",
            '<critical-error component="neural-network-trainer.criterion">', CE, "</critical-error>",
            "</sprint>", "exiting..."],
    "xml-one-line": ['<information component="x">starting</information>',
                     f'<critical-error component="neural-network-trainer.criterion">{CE}</critical-error>',
                     "exiting..."],
    "plain": ["some progress", f"critical error: {CE}", "exiting..."],
    "error": ["some progress", "error: the corpus file cannot be read", "exiting..."],
    "traceback": ["Traceback (most recent call last):", '  File "x.py", line 1, in <module>',
                  "ValueError: the layer has 11 outputs, the posteriors 5 labels", "exiting..."],
    "nothing": ["some progress", "exiting..."],
}

FLOOD = 50 << 20


def flood(kind: str) -> None:
    if kind == "progress":
        block = "".join(f"\r{i % 100:3d}%|{'#' * (i % 50):<50}| {i}/999999" for i in range(4096)).encode()
    else:
        block = b"x" * (1 << 20)
    for _ in range(FLOOD // len(block)):
        sys.stderr.buffer.write(block)
    sys.stderr.buffer.write(b"\rexiting...")


if __name__ == "__main__":
    if sys.argv[1] in ("progress", "flood"):
        flood(sys.argv[1])
        sys.stderr.flush()
        sys.exit(1)
    for line in LOGS[sys.argv[1]]:
        print(line, file=sys.stderr)
    sys.stderr.flush()
    sys.exit(1)
