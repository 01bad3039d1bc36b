"""Loading a large RASR Bliss lexicon in the emulator: the bare XML parse against the emulator's
reader, without and with its compiled-lexicon cache, in time and peak memory.

The lexicon is synthetic (``sprint_control.emulator.synthetic_bliss``: 200,000 word lemmas shaped
like a large word lexicon, about 21 MB of XML), generated once per machine into the temporary
directory by a separate process, so that neither its generation nor its text counts in the peak
memory of a benchmark. Nothing is committed: the file is made where it is used.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from xml.parsers import expat

NUM_LEMMAS = 200_000


def _workdir() -> str:
    path = os.path.join(tempfile.gettempdir(), f"sprint_control_bench_{os.getuid() if hasattr(os, 'getuid') else 0}")
    os.makedirs(path, exist_ok=True)
    return path


def lexicon_file(num_lemmas: int) -> str:
    """The synthetic lexicon of ``num_lemmas`` lemmas, made once (by a child process) and reused."""
    path = os.path.join(_workdir(), f"lexicon-{num_lemmas}.xml")
    if not os.path.exists(path):
        tmp = f"{path}.{os.getpid()}.tmp"
        code = ("import sys; from sprint_control.emulator.synthetic_bliss import write_lexicon; "
                "write_lexicon(sys.argv[1], int(sys.argv[2]))")
        subprocess.run([sys.executable, "-c", code, tmp, str(num_lemmas)], check=True)
        os.replace(tmp, path)
    return path


def warm_cache(num_lemmas: int) -> str:
    """A cache directory that holds the compiled lexicon (built once, by a child process)."""
    path = os.path.join(_workdir(), f"cache-{num_lemmas}")
    lex = lexicon_file(num_lemmas)
    code = ("import sys; from sprint_control.emulator.lexicon_file import read_lexicon; "
            "read_lexicon(sys.argv[1], sys.argv[2])")
    subprocess.run([sys.executable, "-c", code, lex, path], check=True)
    return path


def bare_parse(path: str) -> None:
    """expat over the file with handlers that do nothing: the floor of any Python-level reader."""
    parser = expat.ParserCreate()
    parser.buffer_text = True
    parser.StartElementHandler = lambda tag, attrib: None
    parser.EndElementHandler = lambda tag: None
    parser.CharacterDataHandler = lambda data: None
    with open(path, "rb") as f:
        parser.ParseFile(f)


def load(path: str, cache) -> int:
    from sprint_control.emulator.bliss_lexicon import BlissLexicon

    return len(BlissLexicon(path, cache=cache).lemmas)


class LexiconLoad:
    """``BlissLexicon`` of a 200k-lemma file: parsed (no cache, what the first child of a pool pays)
    and from a warm cache (what every other child pays), against expat with empty handlers and
    ``xml.etree.ElementTree.parse`` over the same file."""

    num_lemmas = NUM_LEMMAS
    number = 1
    repeat = (1, 3, 60.0)
    timeout = 900

    def setup(self):
        self.path = lexicon_file(self.num_lemmas)
        self.cache = warm_cache(self.num_lemmas)

    def time_bare_expat(self):
        bare_parse(self.path)

    def time_etree_parse(self):
        ET.parse(self.path)

    def time_load(self):
        load(self.path, None)

    def time_load_cached(self):
        load(self.path, self.cache)

    def peakmem_etree_parse(self):
        ET.parse(self.path)

    def peakmem_load(self):
        load(self.path, None)

    def peakmem_load_cached(self):
        load(self.path, self.cache)

    def track_load_over_bare_expat(self):
        """Seconds of the uncached load per second of the bare parse (one of each, back to back)."""
        t0 = time.perf_counter()
        bare_parse(self.path)
        t1 = time.perf_counter()
        load(self.path, None)
        t2 = time.perf_counter()
        return (t2 - t1) / max(t1 - t0, 1e-9)

    track_load_over_bare_expat.unit = "ratio"  # type: ignore[attr-defined]

    def track_cached_over_bare_expat(self):
        t0 = time.perf_counter()
        bare_parse(self.path)
        t1 = time.perf_counter()
        load(self.path, self.cache)
        t2 = time.perf_counter()
        return (t2 - t1) / max(t1 - t0, 1e-9)

    track_cached_over_bare_expat.unit = "ratio"  # type: ignore[attr-defined]


_ONE_LOAD = r"""
import resource, sys, time
mode, path = sys.argv[1], sys.argv[2]
t = time.perf_counter()
if mode == "expat":
    from benchmarks.bench_lexicon import bare_parse
    bare_parse(path)
elif mode == "etree":
    import xml.etree.ElementTree as ET
    ET.parse(path)
else:
    from sprint_control.emulator.bliss_lexicon import BlissLexicon
    BlissLexicon(path)
print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def figures(num_lemmas: int = NUM_LEMMAS, repeats: int = 3) -> list[tuple[str, float, float]]:
    """``(load, best seconds, peak RSS MB)`` of each kind of load, one fresh process per load (the
    table of docs/benchmarks.md): ``python -m benchmarks.bench_lexicon``."""
    import shutil

    path = lexicon_file(num_lemmas)
    cache = os.path.join(_workdir(), f"figures-cache-{num_lemmas}")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    rows: dict[str, list[tuple[float, float]]] = {}
    for _ in range(repeats):
        for mode in ("expat", "etree", "parsed", "cached"):
            env = dict(os.environ, SPRINT_CONTROL_CACHE_DIR="off" if mode == "parsed" else cache)
            if mode == "parsed":
                shutil.rmtree(cache, ignore_errors=True)
            if mode == "cached" and not os.path.isdir(cache):
                subprocess.run([sys.executable, "-c", _ONE_LOAD, "cached", path], env=env, cwd=root, check=True,
                               capture_output=True)
            out = subprocess.run([sys.executable, "-c", _ONE_LOAD, mode, path], env=env, cwd=root, check=True,
                                 capture_output=True, text=True).stdout.split()
            rows.setdefault(mode, []).append((float(out[0]), float(out[1])))
    return [(mode, min(t for t, _ in v), max(m for _, m in v)) for mode, v in rows.items()]


if __name__ == "__main__":  # pragma: no cover
    print("| load | seconds | peak RSS |\n|---|---|---|")
    for mode, seconds, mb in figures():
        print(f"| {mode} | {seconds:.2f} | {mb:.0f} MB |")
