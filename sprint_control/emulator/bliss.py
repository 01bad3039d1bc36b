"""RASR's Bliss XML files for the emulator: the streaming XML reader with line numbers, corpora and
segment lists.

A Bliss corpus (the subset read here, see docs/emulator.md)::

    <corpus name="train">
      <speaker-description name="spk1" gender="male"/>
      <recording name="rec1" audio="rec1.wav">
        <speaker name="spk1"/>
        <segment name="1" start="0.0" end="1.23"><orth>hello world</orth></segment>
      </recording>
      <subcorpus name="part2"> <recording ...> ... </recording> </subcorpus>
      <include file="more.xml"/>
    </corpus>

Segment full names are RASR's: corpus name / subcorpus names / recording name / segment name, a
segment without a name being numbered 1, 2, ... within its recording (RASR counts every segment
of the recording and appends ``+`` while the number is taken). A segment has
``round((end - start) / FRAME_SHIFT)`` frames (``start`` defaults to 0, as in RASR), at most
``MAX_SEGMENT_FRAMES``. Speakers and conditions follow RASR: a ``<speaker-description name=...>``
(or ``<condition-description>``) defines one in its section, an anonymous one (named
``ANONYMOUS``) is the section's default, ``<speaker name=.../>`` in a corpus, subcorpus or
recording selects the default speaker of its segments, in a segment that segment's speaker; names
are looked up from the section outwards, an undefined one is RASR's error ``speaker "x" not
defined`` (logged, the speaker stays unset). Files are read as a stream (``textfile.iter_input``:
regular files only, gzip by content, bounded size); an include is parsed where it stands, at most
``MAX_INCLUDE_DEPTH`` deep, never in a cycle and never twice into the same section (that could
only repeat its segment names). Errors name the file and line: ``BlissError("corpus.xml:12: ...")``.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Optional
from xml.parsers import expat

from .textfile import InputError, decode_utf8, iter_input, read_input

log = logging.getLogger("sprint_control.emulator.bliss")

#: Seconds per frame: RASR's usual 10 ms feature frame shift.
FRAME_SHIFT = 0.01
#: The longest segment the emulator takes (about 2.8 hours at 10 ms): its features are generated.
MAX_SEGMENT_FRAMES = 1_000_000
#: The longest orthography taken (characters): longer text inside one <orth> is refused as it comes.
MAX_ORTH_CHARS = 1 << 20
#: How deep includes may nest (a deeper chain is taken for a cycle the path check did not see).
MAX_INCLUDE_DEPTH = 50
#: RASR's name of a speaker or condition described without a name.
ANONYMOUS = "ANONYMOUS"
_ENCODING = re.compile(rb"""^\s*<\?xml[^>]*?encoding\s*=\s*["']([^"']*)["']""")


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
    """Whether ``path`` names a Bliss XML file: ``.xml`` or ``.xml.gz``, or content (after gunzip)
    starting with ``<``. Only the first chunk is read."""
    p = str(path).lower()
    if p.endswith((".xml", ".xml.gz")):
        return True
    try:
        for chunk in iter_input(str(path), "file", InputError):
            stripped = chunk.lstrip()
            if stripped:
                return stripped[:1] == b"<"
        return False
    except (OSError, ValueError):
        return False


def read_bytes(path: str) -> bytes:
    """The file's bytes, gunzipped when it is gzip'd, within ``textfile``'s bounds."""
    try:
        return read_input(path, "file", InputError)
    except InputError as exc:
        raise BlissError(f"{path}:0: {exc.reason}") from None


def stream_xml(path: str, handler, end: Optional[Callable] = None, chars: Optional[Callable] = None):
    """Parses an XML file as a stream with expat. ``handler`` is an object with ``start(tag,
    attrib)`` and ``end(tag)`` methods and a ``parser`` attribute (set to the expat parser before
    parsing: for ``CurrentLineNumber``; it may also set the parser's ``CharacterDataHandler``); or,
    given ``end`` too, ``handler`` is ``start(parser, tag, attrib)``, ``end(parser, tag)`` and
    ``chars(data)`` handle the text. Malformed XML, an unknown encoding and a file that
    ``textfile.iter_input`` refuses are BlissErrors at the line reached; handlers raise BlissError
    for what they refuse."""
    parser = expat.ParserCreate()
    parser.buffer_text = True
    if end is None:
        handler.parser = parser
        parser.StartElementHandler = getattr(handler, "start_root", handler.start)
        parser.EndElementHandler = handler.end
    else:
        start = handler
        parser.StartElementHandler = lambda tag, attrib: start(parser, tag, attrib)
        parser.EndElementHandler = lambda tag: end(parser, tag)
        if chars is not None:
            parser.CharacterDataHandler = chars
    first = True
    try:
        for chunk in iter_input(path, "file", InputError):
            if first:
                _check_encoding(path, chunk)
                first = False
            parser.Parse(chunk, False)
        parser.Parse(b"", True)
    except InputError as exc:
        raise BlissError(f"{path}:{parser.CurrentLineNumber if not first else 0}: {exc.reason}") from None
    except expat.ExpatError as exc:
        raise BlissError(f"{path}:{exc.lineno}: malformed XML: {expat.ErrorString(exc.code)}") from None
    except LookupError as exc:  # an encoding Python does not know
        raise BlissError(f"{path}:1: unknown encoding in the XML declaration ({exc}); expected utf-8 or "
                         "another encoding Python knows") from None
    return parser


def _check_encoding(path: str, head: bytes) -> None:
    match = _ENCODING.match(head[:400])
    if match:
        name = match.group(1).decode("ascii", "replace")
        import codecs

        try:
            codecs.lookup(name)
        except LookupError:
            raise BlissError(f"{path}:1: unknown encoding={name!r} in the XML declaration; expected utf-8 or "
                             "another encoding Python knows") from None


def parse_xml(path: str) -> Node:
    """The root element of an XML file as a tree of Nodes, every element with its line; malformed
    XML is a BlissError. (The corpus and lexicon readers stream instead; this is for small files.)"""
    root: list[Node] = []
    stack: list[Node] = []
    texts: list[list[str]] = []

    def start(parser, tag: str, attrib: dict) -> None:
        node = Node(tag, attrib, path, parser.CurrentLineNumber)
        if stack:
            stack[-1].children.append(node)
        else:
            root.append(node)
        stack.append(node)
        texts.append([])

    def end(parser, tag: str) -> None:
        node = stack.pop()
        node.text = " ".join("".join(texts.pop()).split())

    def chars(data: str) -> None:
        if texts:
            texts[-1].append(data)

    stream_xml(path, start, end, chars)
    if not root:
        raise BlissError(f"{path}:1: no XML element")
    return root[0]


def first(node: Node, tag: str) -> Optional[Node]:
    """The first child called ``tag``, or None."""
    found = node.find_all(tag)
    return found[0] if found else None


# -- corpora ---------------------------------------------------------------------------------------
class _Section:
    """A corpus, subcorpus or recording: its full name, the names reserved in it, its speakers and
    conditions."""

    __slots__ = ("kind", "full_name", "parent", "reserved", "described", "default", "segments")

    def __init__(self, kind: str, full_name: str, parent: Optional[_Section]):
        self.kind = kind
        self.full_name = full_name
        self.parent = parent
        self.reserved: set[str] = set()
        self.described: dict[str, set[str]] = {"speaker": set(), "condition": set()}
        self.default: dict[str, Optional[str]] = {"speaker": None, "condition": None}
        self.segments = 0

    def lookup(self, what: str, name: str) -> bool:
        s: Optional[_Section] = self
        while s is not None:
            if name in s.described[what]:
                return True
            s = s.parent
        return False

    def default_of(self, what: str) -> Optional[str]:
        s: Optional[_Section] = self
        while s is not None:
            if s.default[what] is not None:
                return s.default[what]
            s = s.parent
        return None


class _CorpusReader:
    """Streams a Bliss corpus (and its includes) into segment dicts; see ``read_bliss_corpus``."""

    def __init__(self, keep: Optional[set]):
        self.keep = keep
        self.name: Optional[str] = None
        self.out: list[dict] = []
        self.seen: dict[str, str] = {}
        self.include_stack: list[str] = []
        self.included: dict[tuple[str, str], str] = {}
        self.warned: set = set()

    # one file ---------------------------------------------------------------------------------
    def read(self, path: str, section: Optional[_Section]) -> None:
        real = os.path.realpath(path)
        self.include_stack.append(real)
        stack: list = []  # per open element: a _Section, a segment dict, or a marker string
        sections = [section] if section is not None else []
        skip = [0]  # >0: inside an element the reader ignores
        orth: list = []  # the text parts of the open <orth>, when one is open
        orth_chars = [0]
        parser_of: list = []

        def error(parser, message: str) -> BlissError:
            return BlissError(f"{path}:{parser.CurrentLineNumber}: {message}")

        def start(parser, tag: str, a: dict) -> None:
            if not parser_of:
                parser_of.append(parser)
            if skip[0]:
                skip[0] += 1
                stack.append("skip")
                return
            if orth:  # RASR flattens any element inside <orth> into its text
                stack.append("orth-inner")
                return
            top = stack[-1] if stack else None
            if top is None:
                stack.append(self._root(parser, tag, a, path, sections))
                return
            if isinstance(top, dict):  # inside a segment
                stack.append(self._in_segment(parser, tag, a, top, sections[-1], orth, error))
                return
            if isinstance(top, _Section) and top.kind != "recording" and tag in ("subcorpus", "include"):
                if tag == "include":
                    self._include(parser, a, path, top, error)
                    stack.append("include")
                    return
                name = a.get("name")
                if not name:
                    raise error(parser, "<subcorpus> needs a name attribute")
                self._reserve(parser, top, name, "subcorpus", error)
                sub = _Section("subcorpus", f"{top.full_name}/{name}", top)
                sections.append(sub)
                stack.append(sub)
                return
            if isinstance(top, _Section) and tag == "recording" and top.kind != "recording":
                name = a.get("name")
                if not name:
                    raise error(parser, "<recording> needs a name attribute")
                self._reserve(parser, top, name, "recording", error)
                rec = _Section("recording", f"{top.full_name}/{name}", top)
                sections.append(rec)
                stack.append(rec)
                return
            if isinstance(top, _Section) and tag == "segment" and top.kind == "recording":
                stack.append(self._segment(parser, a, top, path, error))
                return
            if isinstance(top, _Section) and tag in ("speaker-description", "condition-description"):
                self._describe(parser, tag.split("-")[0], a, top, error)
                skip[0] = 1
                stack.append("skip")
                return
            if isinstance(top, _Section) and tag in ("speaker", "condition"):
                name = a.get("name")
                if not name:
                    raise error(parser, f'attribute "name" missing in "{tag}" element')
                top.default[tag] = name if self._defined(parser, top, tag, name) else None
                skip[0] = 1
                stack.append("skip")
                return
            skip[0] = 1  # description, and what RASR's schema has no place for here: ignored
            stack.append("skip")

        def end(parser, tag: str) -> None:
            item = stack.pop()
            if item == "skip":
                skip[0] -= 1
            elif item == "orth":
                text = " ".join("".join(orth).split())
                orth.clear()
                orth_chars[0] = 0
                seg = stack[-1]
                if seg["orth"] is None:
                    seg["orth"] = text
            elif isinstance(item, _Section):
                if sections and sections[-1] is item and item is not section:
                    sections.pop()
            elif isinstance(item, dict):
                self._finish_segment(item, sections[-1])

        def chars(data: str) -> None:
            if orth:
                orth.append(data)
                orth_chars[0] += len(data)
                if orth_chars[0] > MAX_ORTH_CHARS:
                    raise error(parser_of[0], f"<orth> longer than {MAX_ORTH_CHARS} characters (the emulator's "
                                              "limit for one orthography)")

        try:
            stream_xml(path, start, end, chars)
        finally:
            self.include_stack.pop()

    # pieces -----------------------------------------------------------------------------------
    def _root(self, parser, tag: str, a: dict, path: str, sections: list):
        line = parser.CurrentLineNumber
        if not sections:  # the corpus file itself
            if tag != "corpus":
                raise BlissError(f"{path}:{line}: expected a Bliss corpus (root element <corpus>), got <{tag}>")
            name = a.get("name")
            if not name:
                raise BlissError(f"{path}:{line}: <corpus> needs a name attribute (the first part of every "
                                 "segment name)")
            self.name = name
            root = _Section("corpus", name, None)
            sections.append(root)
            return root
        here = sections[-1]
        if tag == "corpus":  # an included corpus: its content belongs to the including section
            name = a.get("name")
            own = here.full_name.rsplit("/", 1)[-1]
            if name != own:
                log.warning("%s:%d: name mismatch on included corpus: '%s' instead of '%s'", path, line, name, own)
            return here
        raise BlissError(f"{path}:{line}: an included file must hold a <corpus>, got <{tag}>")

    def _reserve(self, parser, section: _Section, name: str, what: str, error) -> None:
        if name in section.reserved:
            raise error(parser, f"duplicate {what} name {section.full_name + '/' + name!r} ({what} \"{name}\" already "
                                "defined in the section)")
        section.reserved.add(name)

    def _describe(self, parser, what: str, a: dict, owner: _Section, error) -> None:
        name = a.get("name")
        if not name:
            owner.default[what] = ANONYMOUS
        elif name in owner.described[what]:
            raise error(parser, f'{what} "{name}" already defined in this section')
        else:
            owner.described[what].add(name)

    def _defined(self, parser, section: _Section, what: str, name: str) -> bool:
        if section.lookup(what, name):
            return True
        key = (what, name)
        if key not in self.warned:  # RASR's error (logged, not fatal), once per name here
            self.warned.add(key)
            log.error('%s:%d: %s "%s" not defined', self.include_stack[-1], parser.CurrentLineNumber, what, name)
        return False

    def _segment(self, parser, a: dict, rec: _Section, path: str, error) -> dict:
        rec.segments += 1
        name = a.get("name")
        if name:
            self._reserve(parser, rec, name, "segment", error)
        else:
            name = str(rec.segments)
            while name in rec.reserved:
                name += "+"
            rec.reserved.add(name)
        start = _seconds(parser, a, "start", error, default=0.0)
        end = _seconds(parser, a, "end", error)
        if end < start:
            raise error(parser, f"illegal segment boundary times: <segment> ends ({end}) before it starts ({start})")
        frames = int(round((end - start) / FRAME_SHIFT))
        if frames > MAX_SEGMENT_FRAMES:
            raise error(parser, f"<segment> of {end - start:g} seconds is {frames} frames, more than the emulator's "
                                f"limit of {MAX_SEGMENT_FRAMES} (it generates features for every frame)")
        return {"name": f"{rec.full_name}/{name}", "short_name": name, "num_frames": frames, "orth": None,
                "speaker": None, "condition": None, "line": parser.CurrentLineNumber, "file": path,
                "time": end - start}

    def _in_segment(self, parser, tag: str, a: dict, seg: dict, rec: _Section, orth: list, error):
        if tag == "orth":
            orth.append("")
            return "orth"
        if tag in ("speaker", "condition"):
            name = a.get("name")
            if not name:
                raise error(parser, f'attribute "name" missing in "{tag}" element')
            if seg[tag] is not None:
                raise error(parser, f"{tag} for this segment already defined")
            seg[tag] = name if self._defined(parser, rec, tag, name) else None
        elif tag in ("speaker-description", "condition-description"):
            what = tag.split("-")[0]
            if seg[what] is not None:
                raise error(parser, f"{what} for this segment already defined")
            seg[what] = a.get("name") or ANONYMOUS
        return "skip-element"

    def _finish_segment(self, seg: dict, rec: _Section) -> None:
        for what in ("speaker", "condition"):
            if seg[what] is None:
                seg[what] = rec.default_of(what)
        if seg["orth"] is None:
            seg["orth"] = ""
        if self.keep is not None and seg["name"] not in self.keep and seg["short_name"] not in self.keep:
            return
        if seg["name"] in self.seen:
            raise BlissError(f"{seg['file']}:{seg['line']}: duplicate segment name {seg['name']!r} (first at "
                             f"{self.seen[seg['name']]})")
        self.seen[seg["name"]] = f"{seg['file']}:{seg['line']}"
        self.out.append(seg)

    def _include(self, parser, a: dict, path: str, section: _Section, error) -> None:
        name = a.get("file")
        if not name:
            raise error(parser, 'attribute "file" missing in "include" tag')
        target = os.path.join(os.path.dirname(path), name)
        if not os.path.exists(target):
            raise error(parser, f"included file {name!r} not found ({target})")
        real = os.path.realpath(target)
        if real in self.include_stack:
            raise error(parser, f"include cycle: {name!r} includes itself (through {len(self.include_stack)} files)")
        if len(self.include_stack) >= MAX_INCLUDE_DEPTH:
            raise error(parser, f"includes nested more than {MAX_INCLUDE_DEPTH} deep")
        key = (real, section.full_name)
        here = f"{path}:{parser.CurrentLineNumber}"
        if key in self.included:
            raise error(parser, f"{name!r} is already included into {section.full_name!r} (at {self.included[key]}): "
                                "a second time could only repeat its segment names")
        self.included[key] = here
        self.read(target, section)


def _seconds(parser, a: dict, attr: str, error, default: Optional[float] = None) -> float:
    raw = a.get(attr)
    if raw is None:
        if default is not None:
            return default
        raise error(parser, f"<segment> needs a {attr} attribute (seconds): the emulator has no audio to measure")
    try:
        value = float(raw)
    except ValueError:
        raise error(parser, f"<segment> {attr}={raw!r} is not a number of seconds") from None
    if not math.isfinite(value):
        raise error(parser, f"<segment> {attr}={raw!r}: the emulator needs a finite time (it has no audio to measure)")
    return value


def read_bliss_corpus(path: str, lexicon=None, keep: Optional[Iterable[str]] = None) -> tuple[str, list[dict]]:
    """``(corpus name, segments)`` of a Bliss corpus file, each segment a dict with ``name`` (RASR's
    full name), ``short_name``, ``num_frames``, ``orth``, ``speaker``, ``condition``, ``time``
    (seconds), ``file`` and ``line``, in file order. With ``keep`` (a segment whitelist), only the
    segments whose full or short name it holds, as RASR's ``corpus.segments.file``: nothing else
    of the others is kept. ``lexicon`` is accepted for compatibility and not used: orthographies are
    read against the lexicon only when a segment's automaton is asked for, as in RASR."""
    reader = _CorpusReader(set(keep) if keep is not None else None)
    reader.read(str(path), None)
    assert reader.name is not None
    return reader.name, reader.out


# -- segment lists ---------------------------------------------------------------------------------
def read_segment_list(path: str) -> list[str]:
    """RASR's ``corpus.segments.file``: one segment name per line (surrounding space stripped; empty
    lines and lines starting with ``#`` skipped), plain or gzip'd, UTF-8."""
    try:
        data = read_input(path, "segment list", InputError)
    except InputError as exc:
        raise BlissError(f"{path}:0: {exc.reason}") from None
    text = decode_utf8(data, path, "segment list", "one segment name per line in UTF-8", BlissError)
    return [s.strip() for s in text.splitlines() if s and not s.startswith("#") and s.strip()]


def whitelist(path: str) -> Optional[set]:
    """The names of a segment list as a set for ``read_bliss_corpus(keep=...)``; None (keep every
    segment) for an empty list, with RASR's error line, as RASR discards an empty whitelist."""
    names = read_segment_list(path)
    if not names:
        log.error("Discard segment whitelist, because file is empty or does not exist: %s", path)
        return None
    log.info("Use a segment whitelist with %d entries, keep only listed segments.", len(set(names)))
    return set(names)
