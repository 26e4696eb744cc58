"""Docstrings to queries and passages (lead.data.docstrings): prose kept, markup dropped."""

from __future__ import annotations

from lead.data import docstrings

NUMPY_STYLE = '''Compute the running median of a noisy signal.

The window slides over the signal one sample at a time and the median of the
samples it covers replaces the centre sample, which removes isolated spikes
while keeping sharp edges intact. See :func:`~scipy.signal.medfilt` and
``numpy.median`` for the underlying operations.

Parameters
----------
signal : array_like
    The samples to smooth.

Notes
-----
Edges are padded with *zeros*, so the first and last outputs are biased
towards zero when the window is wide compared to the signal.

Examples
--------
>>> running_median([1, 9, 1])
array([1, 1, 1])
'''

GOOGLE_STYLE = '''Open a connection to the message broker and return a session.

The session keeps a heartbeat thread alive for as long as it is open. Use it
as a context manager so that the connection closes even when an error occurs::

    with connect(url) as session:
        session.send(message)

Args:
    url (str): Where the broker listens.

.. note::
    Sessions are not shared between processes, because the heartbeat thread
    would be lost when a worker process is forked.

.. versionadded:: 2.1
'''


def test_numpy_style_docstring_keeps_prose_and_drops_parameters_examples_and_markup():
    query, passage = docstrings.split_docstring(NUMPY_STYLE)
    assert query == "Compute the running median of a noisy signal."
    assert passage.startswith("The window slides over the signal")
    assert "See medfilt and numpy.median for" in passage  # roles and literals unwrapped
    assert "padded with zeros" in passage  # the Notes section is prose: kept
    for noise in ("Parameters", "The samples to smooth", ">>>", "array([1", "``", ":func:", "*"):
        assert noise not in passage


def test_google_style_docstring_drops_args_and_code_but_keeps_notes():
    query, passage = docstrings.split_docstring(GOOGLE_STYLE)
    assert query == "Open a connection to the message broker and return a session."
    assert "closes even when an error occurs:" in passage
    assert "session.send" not in passage and "Where the broker listens" not in passage
    assert "Sessions are not shared between processes" in passage
    assert "versionadded" not in passage and "2.1" not in passage


def test_unusable_docstrings_give_no_query_or_no_passage():
    words = " ".join(["This passage has plenty of words in it."] * 5)
    # too short to be a query: the whole docstring becomes a distractor passage
    query, passage = docstrings.split_docstring(f"Return self.\n\n{words}")
    assert query is None and passage.startswith("Return self.")
    # a template filled in at import time is not real text
    assert docstrings.split_docstring(f"Return the %(klass)s values.\n\n{words}") == (None, None)
    # too little prose
    assert docstrings.split_docstring("Compute the thing quickly.\n\nSee other.") == (None, None)
    # a query found verbatim in its passage is answered by string matching: dropped
    query, passage = docstrings.split_docstring(
        f"Sort the list in place.\n\nThe method will sort the list in place. {words}"
    )
    assert query is None and passage is not None


def test_passages_are_capped_at_a_sentence_end():
    text = " ".join(f"Sentence {i} has five words." for i in range(60))
    capped = docstrings.cap_words(text, 23)
    assert capped.endswith("words.") and len(capped.split()) == 20
