"""Text repair and checks: stray byte-order marks, NUL characters, invalid UTF-8, latin-1
mojibake, empty texts, unusable ids.

MS MARCO's collection.tsv holds passages whose UTF-8 bytes were once decoded as latin-1 and
re-encoded ("cafÃ©" for "café"); other collections hold Windows-1252 lines, or are several
files concatenated (each with its byte-order mark). Repairs are counted through `Checks`;
what cannot be repaired names the file and line.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lead.data.checks import Checks
from lead.errors import DataError

BOM = b"\xef\xbb\xbf"
BOM_CHAR = "\ufeff"
# Whitespace (any Unicode space separator, tab, newline) and control characters: an id holding
# one breaks the blank-separated TREC run format and every later lookup.
# Blanks, control and invisible format characters (a zero-width space prints as nothing).
_UNUSABLE_IN_ID = r"[\p{Z}\p{Cc}\p{Cf}]"
# Mojibake marker: a UTF-8 lead byte followed by a continuation byte, both read as latin-1
# characters ("Ã©" for "é", "â\x80\x99" for "’"). Legitimate text almost never has one.
_MOJIBAKE = "[\u00c2-\u00f4][\u0080-\u00bf]"
_LATIN1_RUN = re.compile("[\u0080-\u00ff]+")


def strip_leading_bom(first_fields: pa.Array, checks: Checks | None) -> pa.Array:
    """The first field of each line without a byte-order mark starting it, counted.

    Files concatenated with `cat` carry the mark of each later file at the start of a line,
    where it would become part of an id. (The one opening a file is dropped by the block
    reader; a U+FEFF inside a text is a zero-width character and left alone.)
    """
    marked = pc.starts_with(first_fields, BOM_CHAR)
    count = pc.sum(marked).as_py() or 0
    if not count:
        return first_fields
    if checks is not None:
        checks.repaired("byte-order marks starting a line removed (concatenated files?)", count)
    return pc.if_else(marked, pc.utf8_slice_codeunits(first_fields, 1), first_fields)


def refuse_nul(value: str, path: str | Path, line: int, what: str) -> str:
    """No text holds a NUL character: it means binary data or a broken export."""
    if "\x00" in value:
        raise DataError(path, line, f"{what} contains a NUL character")
    return value


def _valid_utf8(block: memoryview) -> bool:
    offsets = pa.py_buffer(np.array([0, len(block)], dtype=np.int32))
    try:
        pa.StringArray.from_buffers(1, offsets, pa.py_buffer(block)).validate(full=True)
    except pa.ArrowInvalid:
        return False
    return True


def ensure_utf8(
    block: memoryview, first_line: int, path: str | Path, repair: bool, checks: Checks | None
) -> memoryview:
    """Return `block` as valid UTF-8: repaired line by line (as Windows-1252) or refused."""
    if _valid_utf8(block):
        return block
    lines = bytes(block).split(b"\n")
    for index, line in enumerate(lines):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as err:
            if not repair:
                raise DataError(
                    path, first_line + index, f"invalid UTF-8 at byte {err.start + 1} of the line"
                ) from err
            lines[index] = _decode_legacy(line).encode("utf-8")
            if checks is not None:
                checks.repaired("lines decoded as Windows-1252 (not UTF-8)", 1)
    return memoryview(b"\n".join(lines))


def _decode_legacy(line: bytes) -> str:
    """Non-UTF-8 bytes are most likely Windows-1252; latin-1 covers its five undefined bytes."""
    try:
        return line.decode("cp1252")
    except UnicodeDecodeError:
        return line.decode("latin-1")


def repair_mojibake_text(text: str) -> str:
    """Undo UTF-8-read-as-latin-1 in each run of latin-1-range characters where it round-trips.

    A run that is not valid UTF-8 once re-encoded (a real "é" next to ASCII) stays as it is,
    so legitimate accented text is never altered.
    """
    try:  # the common case: all of the text's non-ASCII is mojibake (same result, faster)
        return text.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return _LATIN1_RUN.sub(_repair_run, text)


def _repair_run(match: re.Match) -> str:
    run = match.group()
    try:
        return run.encode("latin-1").decode("utf-8")
    except UnicodeDecodeError:
        return run


def repair_mojibake(texts: pa.Array) -> tuple[pa.Array, int]:
    """Repair the texts that carry mojibake markers; returns the texts and how many changed."""
    candidates = pc.indices_nonzero(pc.invert(pc.string_is_ascii(texts)))
    if not len(candidates):
        return texts, 0
    marked = candidates.filter(pc.match_substring_regex(texts.take(candidates), _MOJIBAKE))
    if not len(marked):
        return texts, 0
    originals = texts.take(marked).to_pylist()
    repaired = [repair_mojibake_text(text) for text in originals]
    mask = np.zeros(len(texts), dtype=bool)
    mask[marked.to_numpy()] = True
    changed = sum(a != b for a, b in zip(originals, repaired, strict=True))
    return pc.replace_with_mask(texts, pa.array(mask), pa.array(repaired, pa.string())), changed


def _blank(values: pa.Array) -> pa.Array:
    """Empty or only whitespace (utf8_is_space is false for the empty string)."""
    return pc.or_(pc.equal(pc.binary_length(values), 0), pc.utf8_is_space(values))


def check_ids(ids: pa.Array, lines: np.ndarray, path: str | Path, what: str) -> None:
    """Refuse (always) an empty id, or one with whitespace or control characters.

    An empty id cannot be referred to; one with a blank is split in two by the TREC run
    format and by every tool that reads it.
    """
    empty = pc.equal(pc.binary_length(ids), 0)
    if (pc.all(pc.ascii_is_printable(ids)).as_py() is not False
            and not pc.any(pc.match_substring(ids, " ")).as_py() and not pc.any(empty).as_py()):
        return  # the common case, at a quarter of the cost of the regular expression
    bad = pc.indices_nonzero(pc.or_(empty, pc.match_substring_regex(ids, _UNUSABLE_IN_ID)))
    if not len(bad):
        return
    row = bad[0].as_py()
    line = int(lines[row])
    if empty[row].as_py():
        raise DataError(path, line, f"empty {what}")
    value = ids[row].as_py()
    raise DataError(path, line, f"{what} {value!r} contains whitespace, a control or an "
                                f"invisible character ({codepoints(value)}): ids must be single "
                                "visible words (TREC runs are blank-separated)")


def codepoints(text: str, limit: int = 12) -> str:
    """A text's characters as code points, to show what printing hides (U+0065 U+0301)."""
    shown = " ".join(f"U+{ord(c):04X}" for c in text[:limit])
    return shown + (" ..." if len(text) > limit else "")


def lookalike(value: str, known: pa.Array) -> str | None:
    """An id of `known` that differs from `value` only by Unicode normalisation (NFC), if any:
    what makes an id look present while it is not."""
    import unicodedata

    wanted = unicodedata.normalize("NFC", value)
    normalised = pc.utf8_normalize(known, "NFC")
    found = pc.indices_nonzero(pc.equal(normalised, wanted))
    return known[found[0].as_py()].as_py() if len(found) else None


def check_texts(
    texts: pa.Array,
    lines: np.ndarray,
    path: str | Path,
    checks: Checks,
    what: str,
    titles: pa.Array | None = None,
) -> None:
    """Count (or, strict, refuse) rows whose text (and title, when given) is blank."""
    blank = _blank(texts) if titles is None else pc.and_(_blank(texts), _blank(titles))
    rows = pc.indices_nonzero(blank)
    if len(rows):
        line = int(lines[rows[0].as_py()])
        checks.problem(f"keep {what}s with an empty text", path, line, f"empty {what} text",
                       count=len(rows))
