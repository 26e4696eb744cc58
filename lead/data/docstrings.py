"""Docstrings to plain prose: the query (first sentence) and passage of one documented object.

Parameter lists, examples, code, tables and reST/Markdown markup describe arguments or
render as markup, not the object itself: they are removed, and what remains must read as
prose (mostly words) to become a passage.
"""

from __future__ import annotations

import re

MIN_PASSAGE_WORDS = 20
MAX_PASSAGE_WORDS = 120
MIN_QUERY_WORDS = 4
MAX_QUERY_WORDS = 32

_TEMPLATE = re.compile(r"%\(\w+\)[sdr]|\{\w+\}")  # filled in at import time
_UNDERLINE = re.compile(r"^\s*([-=~^*])\1{2,}\s*$")
_NAMED_SECTIONS = (
    "args|arguments|attributes|example|examples|inputs|keyword args|keyword arguments|kwargs|"
    "methods|note|notes|other parameters|outputs|parameters|params|raises|references|return|"
    "returns|see also|shape|shapes|tip|todo|usage|warning|warnings|warns|yield|yields"
)
_GOOGLE_HEADER = re.compile(rf"^({_NAMED_SECTIONS})\s*::?$", re.IGNORECASE)
_KEPT_SECTIONS = frozenset({"note", "notes", "tip", "warning", "warnings"})
_KEPT_DIRECTIVES = frozenset({"note", "warning", "tip", "hint", "important", "attention",
                              "caution", "admonition"})
_DIRECTIVE = re.compile(r"^\.\.\s+([\w:-]+)::")
_FIELD = re.compile(
    r"^:(param|parameter|arg|argument|key|keyword|type|raises?|except|exception|var|ivar|cvar|"
    r"vartype|returns?|rtype|yields?|ytype|meta)\b[^:]*:(\s|$)"
)
_TABLE_BORDER = re.compile(r"^[+=|-][-=+| ]*$")
_ROLE = re.compile(r":[\w:.+-]+:`(~?)([^`<]*?)\s*(?:<[^`>]*>)?`")  # ~ shows the last part
_LINK = re.compile(r"`([^`<]*?)\s*<[^`>]*>`_{1,2}")
_LITERAL = re.compile(r"``(.*?)``|`([^`]+)`_{0,2}")
_EMPHASIS = re.compile(r"\*{1,2}([^*\s][^*]*?)\*{1,2}")
_URL = re.compile(r"https?://\S+")
_SENTENCE_END = re.compile(r"(?<=[a-z0-9)\]][.!?])\s+(?=[A-Z(])")
_SENTENCE_STOP = re.compile(r"[.!?](?=\s|$)")
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*")
_NORMAL = re.compile(r"[^0-9a-z]+")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _section_header(lines: list[str], i: int) -> tuple[str, int] | None:
    """(name, lines it takes) of a section starting at line i: numpy ("Name" + underline)
    or Google ("Name:") style; None if line i starts none."""
    line = lines[i]
    if not line.strip() or _indent(line) > 0 or _UNDERLINE.match(line):
        return None
    if i + 1 < len(lines) and _UNDERLINE.match(lines[i + 1]):
        return line.strip().lower(), 2
    match = _GOOGLE_HEADER.match(line.strip())
    return (match.group(1).lower(), 1) if match else None


def _end_of_code(lines: list[str], i: int) -> int:
    """The line after a doctest (it runs to a blank line) or a fenced block starting at i."""
    if lines[i].strip().startswith("```"):
        i += 1
        while i < len(lines) and not lines[i].strip().startswith("```"):
            i += 1
        return i + 1
    while i < len(lines) and lines[i].strip():
        i += 1
    return i


def prose_lines(lines: list[str]) -> list[str]:
    """The prose of a docstring body: description and notes, without code, tables, field
    lists, examples or parameter sections (their text describes arguments, not the object)."""
    kept: list[str] = []
    section: str | None = None
    indented_section = False  # a Google-style section: its content is indented
    skip_deeper_than: int | None = None  # inside a skipped block (directive, literal, field)
    i = 0
    while i < len(lines):
        stripped, indent = lines[i].strip(), _indent(lines[i])
        if skip_deeper_than is not None and (not stripped or indent > skip_deeper_than):
            i += 1
            continue
        skip_deeper_than = None
        header = _section_header(lines, i)
        if header is not None:
            section, indented_section = header[0], header[1] == 1
            i += header[1]
            continue
        if indented_section and stripped and indent == 0:
            section, indented_section = None, False
        if section is not None and section not in _KEPT_SECTIONS:
            i += 1
            continue
        if stripped.startswith((">>>", "```")):
            i = _end_of_code(lines, i)
            continue
        i += 1
        directive = _DIRECTIVE.match(stripped)
        if directive:
            if directive.group(1).lower() not in _KEPT_DIRECTIVES:
                skip_deeper_than = indent
        elif _FIELD.match(stripped):
            skip_deeper_than = indent
        elif stripped.endswith("::"):  # a literal block follows: keep the sentence only
            skip_deeper_than = indent
            if stripped[:-2].strip():
                kept.append(stripped[:-2].rstrip() + ":")
        elif not _TABLE_BORDER.match(stripped) and not stripped.startswith("| "):
            kept.append(stripped)
    return kept


def clean_inline(text: str) -> str:
    """Plain text from reST/Markdown inline markup, with whitespace collapsed."""
    text = _LINK.sub(r"\1", text)
    text = _ROLE.sub(lambda m: m.group(2).rsplit(".", 1)[-1] if m.group(1) else m.group(2), text)
    text = _LITERAL.sub(lambda m: m.group(1) if m.group(1) is not None else m.group(2), text)
    text = _EMPHASIS.sub(r"\1", text)
    text = _URL.sub("", text)
    return " ".join(text.split())


def cap_words(text: str, limit: int = MAX_PASSAGE_WORDS) -> str:
    """At most `limit` words, cut after the last full sentence when that keeps half of them."""
    words = text.split()
    if len(words) <= limit:
        return text
    head = " ".join(words[:limit])
    ends = [m.end() for m in _SENTENCE_STOP.finditer(head)]
    return head[: ends[-1]] if ends and ends[-1] > len(head) // 2 else head


def _is_prose(text: str, minimum_words: int) -> bool:
    """Enough words, and mostly words rather than code, numbers or symbols."""
    tokens = text.split()
    words = sum(1 for token in tokens if _WORD.fullmatch(token.strip(".,;:()\"'!?")))
    return words >= minimum_words and words >= 0.7 * len(tokens)


def split_docstring(doc: str) -> tuple[str | None, str | None]:
    """(query, passage) of a docstring: its first sentence, and the prose that follows.

    The passage is None when there is not enough prose (or the docstring is a template to be
    filled in at import time); the query is None when the first sentence is not a usable
    summary, in which case the whole description is the passage (a distractor).
    """
    if len(doc.split()) < MIN_PASSAGE_WORDS or _TEMPLATE.search(doc):
        return None, None  # (most docstrings are too short: a cheap first test)
    lines = doc.expandtabs().splitlines()
    end = next((i for i in range(len(lines))
                if not lines[i].strip() or _section_header(lines, i)), len(lines))
    first = clean_inline(" ".join(lines[:end]))
    prose = clean_inline(" ".join(prose_lines(lines[end:])))
    query, *rest = _SENTENCE_END.split(first, maxsplit=1)
    if MIN_QUERY_WORDS <= len(query.split()) <= MAX_QUERY_WORDS \
            and _is_prose(query, MIN_QUERY_WORDS - 1):
        passage = cap_words(" ".join([*rest, prose]).strip())
    else:
        query, passage = None, cap_words(f"{first} {prose}".strip())
    if not _is_prose(passage, MIN_PASSAGE_WORDS):
        return None, None
    if query is not None and normalise(query) in normalise(passage):
        query = None
    return query, passage


def normalise(text: str) -> str:
    """Lower-cased words only: the key under which two texts count as the same."""
    return " ".join(_NORMAL.sub(" ", text.lower()).split())
