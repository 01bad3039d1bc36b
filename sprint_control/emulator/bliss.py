"""RASR's Bliss XML files for the emulator: the XML reader with line numbers, corpora and segment lists.

A Bliss corpus (the subset read here, see docs/emulator.md)::

    <corpus name="train">
      <recording name="rec1" audio="rec1.wav">
        <segment name="1" start="0.0" end="1.23"><orth>hello world</orth></segment>
      </recording>
      <subcorpus name="part2"> <recording ...> ... </recording> </subcorpus>
      <include file="more.xml"/>
    </corpus>

Segment full names are RASR's: corpus name / subcorpus names / recording name / segment name, a
segment without a name being numbered 1, 2, ... within its recording. A segment has
``round((end - start) / FRAME_SHIFT)`` frames. ``.gz`` files (or any gzip'd file) are read as such.
Errors name the file and line: ``BlissError("corpus.xml:12: ...")``.
"""

from __future__ import annotations

import gzip
import logging
import math
import os
from dataclasses import dataclass, field
from typing import Optional
from xml.parsers import expat

log = logging.getLogger("sprint_control.emulator.bliss")

#: Seconds per frame: RASR's usual 10 ms feature frame shift.
FRAME_SHIFT = 0.01
_GZIP_MAGIC = b"\x1f\x8b"


class BlissError(ValueError):
    """A Bliss file the emulator cannot use; the message starts with ``file:line:``."""


@dataclass
class Node:
    """An XML element: tag, attributes, children, its text (stripped of surrounding space) and where it
    starts."""

    tag: str
    attrib: dict
    path: str
    line: int
    children: list = field(default_factory=list)
    text: str = ""

    def where(self) -> str:
        return f"{self.path}:{self.line}"

    def error(self, message: str) -> BlissError:
        return BlissError(f"{self.where()}: {message}")

    def find_all(self, tag: str) -> list:
        return [c for c in self.children if c.tag == tag]


def is_bliss_file(path: str) -> bool:
    """Whether ``path`` names a Bliss XML file: ``.xml`` or ``.xml.gz``, or content starting with ``<``."""
    p = str(path).lower()
    if p.endswith((".xml", ".xml.gz")):
        return True
    try:
        return read_bytes(path).lstrip()[:1] == b"<"
    except OSError:
        return False


def read_bytes(path: str) -> bytes:
    """The file's bytes, gunzipped when it is gzip'd."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] == _GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise BlissError(f"{path}:0: not a readable gzip file ({exc})") from None
    return data


def parse_xml(path: str) -> Node:
    """The root element of an XML file, every element with its line; malformed XML is a BlissError."""
    data = read_bytes(path)
    parser = expat.ParserCreate()
    root: list[Node] = []
    stack: list[Node] = []
    texts: list[list[str]] = []

    def start(tag: str, attrib: dict) -> None:
        node = Node(tag, attrib, path, parser.CurrentLineNumber)
        if stack:
            stack[-1].children.append(node)
        else:
            root.append(node)
        stack.append(node)
        texts.append([])

    def end(tag: str) -> None:
        node = stack.pop()
        node.text = " ".join("".join(texts.pop()).split())

    def chars(data: str) -> None:
        if texts:
            texts[-1].append(data)

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = chars
    try:
        parser.Parse(data, True)
    except expat.ExpatError as exc:
        raise BlissError(f"{path}:{exc.lineno}: malformed XML: {expat.ErrorString(exc.code)}") from None
    return root[0]


def _include(node: Node) -> list[Node]:
    """The elements an ``<include file=...>`` stands for: the children of an included ``<corpus>``,
    else the included root itself. The file is relative to the including file's directory."""
    name = node.attrib.get("file")
    if not name:
        raise node.error("<include> needs a file attribute")
    path = os.path.join(os.path.dirname(node.path), name)
    if not os.path.exists(path):
        raise node.error(f"included file {name!r} not found ({path})")
    root = parse_xml(path)
    return root.children if root.tag == "corpus" else [root]


def _seconds(node: Node, attr: str) -> float:
    raw = node.attrib.get(attr)
    if raw is None:
        raise node.error(f"<segment> needs a {attr} attribute (seconds)")
    try:
        value = float(raw)
    except ValueError:
        raise node.error(f"<segment> {attr}={raw!r} is not a number of seconds") from None
    if not math.isfinite(value):
        raise node.error(f"<segment> {attr}={raw!r}: the emulator needs a finite time (it has no audio to measure)")
    return value


def _segments(nodes: list[Node], prefix: str, out: list[dict], depth: int = 0) -> None:
    if depth > 50:
        raise nodes[0].error("includes or subcorpora nested more than 50 deep (an include cycle?)")
    for node in nodes:
        if node.tag == "include":
            _segments(_include(node), prefix, out, depth + 1)
        elif node.tag == "subcorpus":
            name = node.attrib.get("name")
            if not name:
                raise node.error("<subcorpus> needs a name attribute")
            _segments(node.children, f"{prefix}/{name}", out, depth + 1)
        elif node.tag == "recording":
            name = node.attrib.get("name")
            if not name:
                raise node.error("<recording> needs a name attribute")
            segs = node.find_all("segment")
            for i, seg in enumerate(segs, 1):
                out.append(_segment(seg, f"{prefix}/{name}/{seg.attrib.get('name') or i}"))


def _segment(node: Node, full_name: str) -> dict:
    start, end = _seconds(node, "start"), _seconds(node, "end")
    if end < start:
        raise node.error(f"<segment> ends ({end}) before it starts ({start})")
    orths = node.find_all("orth")
    speakers = node.find_all("speaker")
    return {
        "name": full_name,
        "num_frames": int(round((end - start) / FRAME_SHIFT)),
        "orth": orths[0].text if orths else "",
        "speaker": speakers[0].attrib.get("name") if speakers else None,
        "line": node.line,
    }


def read_bliss_corpus(path: str, lexicon=None) -> tuple[str, list[dict]]:
    """``(corpus name, segments)`` of a Bliss corpus file, each segment a dict with ``name`` (RASR's
    full name), ``num_frames``, ``orth``, ``speaker`` and ``line``, in file order. With a ``lexicon``,
    an orthography it cannot spell is a BlissError at the segment's line."""
    root = parse_xml(path)
    if root.tag != "corpus":
        raise root.error(f"expected a Bliss corpus (root element <corpus>), got <{root.tag}>")
    name = root.attrib.get("name")
    if not name:
        raise root.error("<corpus> needs a name attribute (the first part of every segment name)")
    segments: list[dict] = []
    _segments(root.children, name, segments)
    seen: dict[str, int] = {}
    for seg in segments:
        if seg["name"] in seen:
            raise BlissError(f"{path}:{seg['line']}: duplicate segment name {seg['name']!r} (first at line "
                             f"{seen[seg['name']]})")
        seen[seg["name"]] = seg["line"]
        if lexicon is not None:
            try:
                lexicon.uniform_alignment(seg["orth"], seg["num_frames"])
            except ValueError as exc:
                raise BlissError(f"{path}:{seg['line']}: segment {seg['name']!r}: {exc}") from None
    return name, segments


def read_segment_list(path: str) -> list[str]:
    """RASR's ``corpus.segments.file``: one full segment name per line (blank lines and ``#`` comments
    skipped), plain or gzip'd."""
    text = read_bytes(path).decode("utf-8")
    return [s.strip() for s in text.splitlines() if s.strip() and not s.lstrip().startswith("#")]


def first(node: Node, tag: str) -> Optional[Node]:
    """The first child called ``tag``, or None."""
    found = node.find_all(tag)
    return found[0] if found else None
