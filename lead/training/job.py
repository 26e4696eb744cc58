"""What one training run reads and writes, and what its checkpoint must match to resume."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lead.errors import ConfigError
from lead.io import config_hash


@dataclass(frozen=True)
class ModelFiles:
    """A model directory and that model's own tokenization of the training data."""

    model_dir: Path
    query_tokens: Path
    corpus_tokens: Path
    dev_query_tokens: Path | None = None  # a jointly trained teacher's dev evaluation


@dataclass(frozen=True)
class CacheFiles:
    """A frozen teacher's layer cache: the training queries' and the corpus shards' files."""

    queries: tuple[Path, ...]
    passages: tuple[Path, ...]


@dataclass(frozen=True)
class TrainingJob:
    """Everything one run reads and writes. The trained model is always the `student` here:
    in `warmup` (method "contrastive") it is the model being warmed up, with no teacher."""

    method: str
    student: ModelFiles
    teacher: ModelFiles | None
    groups: Path
    dev_query_tokens: Path
    dev_qrels: Path
    out: Path
    log: Path
    checkpoint_dir: Path
    optimisation: dict[str, Any]  # resolved `optimisation` section
    distillation: dict[str, Any]  # resolved `distillation` section (defaults for "contrastive")
    model_settings: dict[str, dict[str, Any]]  # role -> resolved model section
    teacher_cache: CacheFiles | None = None
    card: dict[str, Any] = field(default_factory=dict)  # facts for the saved model's card
    keep_checkpoint: bool = False  # after success; a run that ends early always keeps it

    @property
    def command(self) -> str:
        """The stage that runs this job, whose outputs (and checkpoints) it may replace."""
        return "warmup" if self.method == "contrastive" else "distill"

    @property
    def scratch(self) -> Path:
        """Where the run memory-maps the rows it needs (rebuilt at every start)."""
        return self.checkpoint_dir / "scratch"


def job_fingerprint(job: TrainingJob, world_size: int) -> str:
    """What a checkpoint must share with the run that resumes it: settings, inputs, processes."""
    inputs = {
        "groups": job.groups, "dev_queries": job.dev_query_tokens, "dev_qrels": job.dev_qrels,
        **{f"student_{k}": v for k, v in vars(job.student).items() if v is not None},
        **({f"teacher_{k}": v for k, v in vars(job.teacher).items() if v is not None}
           if job.teacher else {}),
    }
    if job.teacher_cache is not None:
        for kind in ("queries", "passages"):
            for number, path in enumerate(getattr(job.teacher_cache, kind)):
                inputs[f"cache_{kind}_{number}"] = path
    return config_hash(
        {
            "method": job.method,
            "optimisation": job.optimisation,
            "distillation": job.distillation,
            "models": job.model_settings,
            "world_size": world_size,
            "input_sizes": {name: _size(Path(path)) for name, path in inputs.items()},
        }
    )


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size if path.exists() else -1


def check_models(job: TrainingJob, student, teacher) -> None:
    """The model directories must be what the config describes (not a stale init)."""
    from lead.modeling.spec import EncoderSpec, resolve_model_settings
    from lead.tokenization import check_tokenizer

    roles = [("student", student, job.student.model_dir)]
    if teacher is not None:
        roles.append(("teacher", teacher, job.teacher.model_dir))
    for role, model, path in roles:
        files = job.student if role == "student" else job.teacher
        dev = job.dev_query_tokens if role == "student" else files.dev_query_tokens
        for tokens in (files.query_tokens, files.corpus_tokens, dev):
            if tokens is not None:
                check_tokenizer(path, tokens)
        if role not in job.model_settings:
            continue
        expected = EncoderSpec.from_settings(resolve_model_settings(job.model_settings[role]))
        differ = [
            f"{name} is {getattr(model.spec, name)!r}, the config says {value!r}"
            for name, value in vars(expected).items()
            if getattr(model.spec, name) != value
        ]
        if differ:
            raise ConfigError(f"{path} does not match the {role} config: {'; '.join(differ)}")
    if job.method != "contrastive" and student.kind != "dual":
        raise ConfigError(
            f"{job.student.model_dir}: students must be dual encoders, not {student.kind}"
        )
