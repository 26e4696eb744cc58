"""A training job's models (lead.training.job): no tokenizer, or not the config's model."""

from __future__ import annotations

import shutil

from training_world import distill_argv

from lead.__main__ import main
from lead.config import dumps


def test_a_model_directory_without_tokenizer_or_not_matching_the_config_fails(
    world, tmp_path, capsys
):
    broken = tmp_path / "teacher"
    shutil.copytree(world["teacher"], broken)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt"):
        (broken / name).unlink(missing_ok=True)
    assert main(distill_argv(world, tmp_path, teacher=broken)) == 2
    assert "no tokenizer" in capsys.readouterr().err
    argv = distill_argv(world, tmp_path)
    argv[argv.index("--settings") + 1] = dumps(
        {"student": {"init": "random", "pooling": "cls"}, "distillation": {"layers": {"k": 2}}}
    )
    assert main(argv) == 2
    assert "pooling is 'mean', the config says 'cls'" in capsys.readouterr().err
