"""Failures that used to end in a traceback, a late crash or a killed process: each is one line
now (lead.__main__), whatever library raised it, and leaves no partial output.

Some of these attack lead/modeling/spec.py, lead/modeling/init.py and lead/tokenization.py,
whose own test files are being reworked; they sit here, beside tests/test_main.py, until then.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hostile import failed, refused, run_stage
from repo import TINY_DATA

from lead.io import OUTPUT_MARKER


def _sentence_transformers_folder(artifacts: Path, folder: Path) -> Path:
    """The shared tiny model as a plain sentence-transformers folder (no lead.json)."""
    shutil.copytree(artifacts / "model", folder)
    (folder / "lead.json").unlink()
    (folder / OUTPUT_MARKER).unlink()
    return folder


def _init_model(source: Path, out: Path) -> list:
    return ["init-model", "--settings", json.dumps({"init": str(source)}), "--out", out]


MODULES = {
    "a list of numbers": [1, 2],
    "an object": {"0": {"path": "", "type": "sentence_transformers.models.Transformer"}},
    "null": None,
    "a string": "modules",
    "a list holding null": [None],
    "an idx that is text": [
        {"idx": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 0, "path": "", "type": "sentence_transformers.models.Transformer"}],
}


@pytest.mark.parametrize("modules", MODULES)
def test_a_modules_json_that_is_no_list_of_modules_is_one_line(capsys, work, roots, artifacts,
                                                               modules):
    """Not taken for a plain Hugging Face folder (`{}`, `null`), no TypeError sorting the
    modules by a text idx."""
    folder = _sentence_transformers_folder(artifacts, work / "st")
    (folder / "modules.json").write_text(json.dumps(MODULES[modules]))
    refused(capsys, roots, *_init_model(folder, work / "model"),
            expect=(f"{folder / 'modules.json'}: expected a list of modules",))


class _Payload:
    """What a malicious pickle holds: unpickling it would create `marker`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def _dense_folder(artifacts: Path, folder: Path) -> Path:
    """A sentence-transformers folder with a Dense module whose weights are a pickle."""
    _sentence_transformers_folder(artifacts, folder)
    (folder / "2_Dense").mkdir()
    (folder / "2_Dense" / "config.json").write_text(json.dumps({
        "in_features": 16, "out_features": 8, "bias": True,
        "activation_function": "torch.nn.modules.activation.Tanh"}))
    modules = json.loads((folder / "modules.json").read_text())
    modules.append({"idx": len(modules), "name": str(len(modules)), "path": "2_Dense",
                    "type": "sentence_transformers.models.Dense"})
    (folder / "modules.json").write_text(json.dumps(modules))
    return folder


PICKLES = {
    "an object that runs code": ("weights-only", "not a weights-only PyTorch state dict"),
    "a bare tensor": ("tensor", "is a pickled Tensor, not a state dict"),
    "a list of tensors": ("list", "is a pickled list, not a state dict"),
    "a number": ("number", "is a pickled int, not a state dict"),
}


@pytest.mark.parametrize("content", PICKLES)
def test_a_pickle_the_weights_only_loader_refuses_or_that_is_no_state_dict_is_one_line(
        capsys, work, roots, artifacts, content):
    """torch's weights-only unpickler refuses arbitrary objects (whose code never runs); what
    it accepts but is no state dict used to end in a RuntimeError or TypeError."""
    folder = _dense_folder(artifacts, work / "dense")
    weights = folder / "2_Dense" / "pytorch_model.bin"
    marker = work / "MARKER"
    kind, expect = PICKLES[content]
    if kind == "weights-only":
        weights.write_bytes(pickle.dumps(_Payload(marker), protocol=2))
    else:
        torch.save({"tensor": torch.zeros(8, 16), "list": [torch.zeros(8)], "number": 5}[kind],
                   weights)
    refused(capsys, roots, *_init_model(folder, work / "model"), expect=(f"{weights}: {expect}",))
    assert not marker.exists()


@pytest.mark.parametrize("error", ["SafetensorError", "OSError"])
def test_a_full_disk_while_saving_a_model_is_one_line_and_keeps_the_earlier_model(
        capsys, monkeypatch, work, roots, artifacts, error):
    """The weights fail to write (safetensors wraps the OS error in its own): one line, and
    the earlier model, the folder around it, stay as they were."""
    import transformers.modeling_utils
    from safetensors import SafetensorError

    argv = ["init-model", "--settings", json.dumps({
        "init": "random", "tokenizer": {"from": None}, "architecture": {
            "num_hidden_layers": 1, "hidden_size": 8, "num_attention_heads": 1,
            "intermediate_size": 8}}), "--tokenizer", artifacts / "tokenizer", "--out",
        work / "model"]
    status, err = run_stage(capsys, *argv)
    assert status == 0, err

    def full(*args, **kwargs):
        if error == "OSError":
            raise OSError(errno.ENOSPC, "No space left on device")
        raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: '
                              'StorageFull, message: "No space left on device" })')

    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", full)
    failed(capsys, roots, *argv, expect=(f"{error}: ", "No space left on device"))


def test_a_max_length_beyond_the_models_positions_is_refused_before_tokenizing(
        capsys, work, roots, artifacts):
    """A passage cut at 2,000 tokens used to be tokenized, then fail to encode (a RuntimeError
    about tensor sizes) in the next stage; evaluate-model failed the same way."""
    refused(capsys, roots, "tokenize", "--tokenizer", artifacts / "model", "--input",
            artifacts / "data" / "corpus.parquet", "--out", work / "tokens.parquet",
            "--max-length", 2000,
            expect=(f"max_length 2000: {artifacts / 'model'} takes at most 512 tokens",))


# Bytes of a passage that would have made the tokenizer allocate gigabytes (6 GB measured,
# then a crash), and the peak the whole `tokenize` process may reach with it (575 MB measured,
# 335 MB without the passage).
HUGE_PASSAGE = 50_000_000
PEAK_MB = 800


def test_a_50_mb_passage_is_tokenized_in_bounded_memory(work, artifacts):
    """Texts are cut at MAX_CHARS_PER_TOKEN characters a token before tokenizing: one 50 MB
    passage costs what its first tokens do. Measured on a child process's own peak (Linux)."""
    import pyarrow as pa

    from lead.io import write_table
    from lead.schemas import CORPUS

    huge = ("word " * (HUGE_PASSAGE // 5))[:HUGE_PASSAGE]
    write_table(pa.table({"doc_id": ["huge", "small"], "title": ["", ""],
                          "text": [huge, "a short passage"]}, schema=CORPUS),
                work / "corpus.parquet")
    del huge
    # The peak of the child's own memory (VmHWM): ru_maxrss would start from this process's,
    # which a fork passes on.
    probe = ("import sys\nfrom lead.__main__ import main\nstatus = main(sys.argv[1:])\n"
             "peak = next(line.split()[1] for line in open('/proc/self/status') "
             "if line.startswith('VmHWM:'))\nprint('PEAK_MB', int(peak) // 1024, status)")
    done = subprocess.run(
        [sys.executable, "-c", probe, "tokenize", "--tokenizer", str(artifacts / "model"),
         "--input", str(work / "corpus.parquet"), "--out", str(work / "tokens.parquet"),
         "--max-length", "32"], capture_output=True, text=True, timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
    peak, status = next(line.split()[1:] for line in done.stdout.splitlines()
                        if line.startswith("PEAK_MB"))
    assert status == "0", done.stderr[-2000:]
    assert int(peak) < PEAK_MB, f"peak {peak} MB"
    import pyarrow.parquet as pq

    lengths = [len(ids) for ids in pq.read_table(work / "tokens.parquet")["input_ids"].to_pylist()]
    assert lengths[0] == 32 and lengths[1] < 32


@pytest.mark.parametrize(("option", "expect"), [
    (["--measures", "nDCG@10", "MRR@ten"], "unknown measure 'MRR@ten'"),
    (["--relevance-level", "0"], "argument --relevance-level: invalid whole number >= 1 value: "
                                 "'0' (see python -m lead evaluate-model --help)"),
    (["--depth", "2.5"], "argument --depth: invalid whole number >= 1 value: '2.5'"),
])
def test_evaluate_model_refuses_its_measures_and_level_before_encoding(
        capsys, monkeypatch, work, roots, artifacts, option, expect):
    """They used to be refused by the evaluation, after the collection was encoded."""
    from lead.retrieval import encode

    def never(*args, **kwargs):
        raise AssertionError("encoded before the options were checked")

    monkeypatch.setattr(encode, "encode_file", never)
    refused(capsys, roots, "evaluate-model", "--model", artifacts / "model", "--corpus",
            TINY_DATA / "collection.tsv", "--queries", TINY_DATA / "queries.test.tsv", "--qrels",
            TINY_DATA / "qrels.test.tsv", "--out", work / "scored", *option, expect=(expect,))
