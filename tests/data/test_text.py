"""Text repair (lead.data.text): mojibake repaired run by run, only where safe."""

from __future__ import annotations

import pytest
from hostile import data, refused, small_files

from lead.data.text import repair_mojibake_text


def test_mojibake_repair_is_safe():
    assert repair_mojibake_text("cafÃ© and naÃ¯ve") == "café and naïve"
    # Each run is repaired on its own; a run that is not UTF-8 once re-encoded stays as it is.
    assert repair_mojibake_text("â\x80\x9cquoted\x80") == "\u201cquoted\x80"
    assert repair_mojibake_text("café next to cafÃ©") == "café next to café"  # per run
    assert repair_mojibake_text("It\u00e2\u20ac\u2122s") == "It\u00e2\u20ac\u2122s"
    assert repair_mojibake_text("Ã©â\x80\x99s") == "é’s"


# Hostile input: each refusal is one line naming the culprit, and changes no file (hostile.py).

INVISIBLE = {
    # where: (file contents of hostile.small_files, the file and id named)
    "a zero-width space in a document id": (
        {"corpus": "p\u200b0\tsome text\np1\tother text\n".encode()}, "corpus.tsv",
        "document id 'p\\u200b0'", "U+0070 U+200B U+0030"),
    "a zero-width space in a query id": (
        {"queries": "q0\u200b\ta query\n".encode(), "qrels": "q0\u200b Q0 p0 1\n".encode()},
        "queries.tsv", "query id 'q0\\u200b'", "U+0071 U+0030 U+200B"),
    "a word joiner in a judged document id": (
        {"qrels": "q0 Q0 p0\u2060 1\n".encode()}, "qrels.txt", "document id 'p0\\u2060'",
        "U+0070 U+0030 U+2060"),
    "a byte-order mark inside a query id": (
        {"queries": "q\ufeff0\ta query\n".encode(), "qrels": "q\ufeff0 Q0 p0 1\n".encode()},
        "queries.tsv", "query id 'q\\ufeff0'", "U+0071 U+FEFF U+0030"),
}


@pytest.mark.parametrize("case", INVISIBLE)
def test_an_id_holding_an_invisible_character_is_refused_with_its_code_points(capsys, work,
                                                                             roots, case):
    """An id that prints like another but is not it: `p0` judged, `p<ZWSP>0` in the corpus,
    and every judgment of it silently unmatched."""
    files, name, shown, points = INVISIBLE[case]
    settings = small_files(work / "in", **files)
    refused(capsys, roots, *data(settings, work / "out"),
            expect=(f"{work / 'in' / name}:1: {shown} contains whitespace, a control or an "
                    f"invisible character ({points})",))
