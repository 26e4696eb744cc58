"""Text repair (lead.data.text): mojibake repaired run by run, only where safe."""

from __future__ import annotations

from lead.data.text import repair_mojibake_text


def test_mojibake_repair_is_safe():
    assert repair_mojibake_text("cafÃ© and naÃ¯ve") == "café and naïve"
    # Each run is repaired on its own; a run that is not UTF-8 once re-encoded stays as it is.
    assert repair_mojibake_text("â\x80\x9cquoted\x80") == "\u201cquoted\x80"
    assert repair_mojibake_text("café next to cafÃ©") == "café next to café"  # per run
    assert repair_mojibake_text("It\u00e2\u20ac\u2122s") == "It\u00e2\u20ac\u2122s"
    assert repair_mojibake_text("Ã©â\x80\x99s") == "é’s"
