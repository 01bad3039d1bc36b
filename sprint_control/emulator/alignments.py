"""Frame alignments for the alignment criteria (cross-entropy, squared-error, binary-divergence) from
a file the emulator reads (``--*.corpus.alignment-file``), since a Bliss corpus carries none.

Formats: ``.npz`` (one 1-D integer array per segment, the key being the full segment name) or text,
one segment per line: ``<segment name><TAB><label> <label> ...`` (``#`` comment lines and blank lines
skipped, gzip allowed). Every alignment is checked against its corpus segment (frame count, label
range); errors name the file and the segment.
"""

from __future__ import annotations

import gzip
import logging
from typing import Optional

import numpy as np

log = logging.getLogger("sprint_control.emulator.alignments")


class AlignmentFileError(ValueError):
    """An alignment file that cannot be read or does not fit the corpus."""


def _read_text(path: str) -> dict:
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise AlignmentFileError(f"{path}: not UTF-8 text (expected 'name<TAB>labels' lines or .npz)") from None
    out: dict = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, sep, labels = line.partition("\t")
        if not sep:
            raise AlignmentFileError(f"{path}:{lineno}: expected '<segment name><TAB><label> <label> ...'")
        try:
            values = [int(x) for x in labels.split()]
        except ValueError:
            raise AlignmentFileError(f"{path}:{lineno}: segment {name!r}: labels must be whole numbers") from None
        if name in out:
            raise AlignmentFileError(f"{path}:{lineno}: segment {name!r} is given twice")
        out[name] = np.array(values, dtype=np.int64)
    return out


def read_alignment_file(path: str) -> dict:
    """``{segment name: int64 frame labels}`` of an alignment file (``.npz`` or text)."""
    try:
        if str(path).endswith(".npz"):
            with np.load(path, allow_pickle=False) as z:
                out = {}
                for name in z.files:
                    a = np.asarray(z[name])
                    if a.ndim != 1 or a.dtype.kind not in "iu":
                        raise AlignmentFileError(f"{path}: segment {name!r}: expected a 1-D integer array, got "
                                                 f"{a.dtype} {a.shape}")
                    out[name] = a.astype(np.int64)
                return out
        return _read_text(path)
    except OSError as exc:
        raise AlignmentFileError(f"alignment file {path}: {exc.strerror or exc}") from None


def load_alignments(path: str, corpus, num_labels: Optional[int]) -> dict:
    """The alignments of ``path`` for the corpus's segments, checked (frames, label range)."""
    table = read_alignment_file(path)
    out, extra = {}, 0
    for name, labels in table.items():
        if name not in corpus:
            extra += 1
            continue
        seg = corpus.get(name)
        if labels.shape[0] != seg.num_frames:
            raise AlignmentFileError(f"{path}: segment {name!r}: the alignment has {labels.shape[0]} frames, "
                                     f"the segment {seg.num_frames}")
        if labels.size and (labels.min() < 0 or (num_labels is not None and labels.max() >= num_labels)):
            raise AlignmentFileError(f"{path}: segment {name!r}: label out of range [0, {num_labels})")
        out[name] = labels
    if extra:
        log.info("alignment file %s: %d segments not in the corpus are ignored", path, extra)
    return out
