"""Corpus ids (lead.data.corpus): duplicates found across batches and sort windows."""

from __future__ import annotations

import pytest

from lead.errors import DataError


def test_duplicate_ids_found_across_batches_and_sort_windows(monkeypatch):
    import numpy as np
    import pyarrow as pa

    from lead.data import corpus

    monkeypatch.setattr(corpus, "_WINDOW", 3)
    unique = corpus.UniqueIds("ids.tsv", "id")
    unique.add(pa.array([str(i) for i in range(10)]), np.arange(1, 11))
    unique.add(pa.array([str(i) for i in range(10, 20)] + ["15", "7"]), np.arange(11, 23))
    with pytest.raises(DataError, match=r"ids\.tsv:21: duplicate id '15' \(first at line 16\)"):
        unique.check()
