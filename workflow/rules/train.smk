# Teacher warm-up and distillation: GPU rules. A rule given `gpu: N` (N > 1) in a profile runs
# under `torchrun --nproc_per_node N`; on CPU the same path runs gloo processes.


rule warmup:
    """Contrastive training of one dual encoder: the teacher's warm-up, or the student's
    pre-training before distillation."""
    input:
        model=f"{RESULTS}/models/{{role}}-init",
        corpus=f"{RESULTS}/tokens/{{role}}/corpus.parquet",
        queries=f"{RESULTS}/tokens/{{role}}/queries/train.parquet",
        dev_queries=f"{RESULTS}/tokens/{{role}}/queries/dev.parquet",
        dev_qrels=f"{RESULTS}/data/qrels/dev.parquet",
        groups=f"{RESULTS}/negatives/initial.parquet",
        code=COMMON_CODE + WARMUP_CODE,
    output:
        model=directory(f"{RESULTS}/models/{{role}}-warm"),
        log=f"{RESULTS}/training/{{role}}-warm.parquet",
    log:
        f"{LOGS}/train/{{role}}-warmup.log",
    benchmark:
        f"{BENCHMARKS}/train/{{role}}-warmup.tsv"
    conda:
        "../envs/lead.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=24 * 60,
    params:
        settings=lambda wc: warmup_settings(wc.role),
        checkpoints=f"{RESULTS}/checkpoints/{{role}}-warmup",
        launch=lambda wc, resources: launch(resources),
    shell:
        "{params.launch} train --settings {params.settings:q} --model {input.model}"
        " --corpus-tokens {input.corpus} --query-tokens {input.queries} --groups {input.groups}"
        " --dev-query-tokens {input.dev_queries} --dev-qrels {input.dev_qrels}"
        " --out {output.model} --log {output.log} --checkpoint-dir {params.checkpoints}"
        " > {log} 2>&1"


rule distill:
    input:
        teacher=model_dir("teacher"),
        student=model_dir("student-warmup"),
        teacher_corpus=f"{RESULTS}/tokens/teacher/corpus.parquet",
        teacher_queries=f"{RESULTS}/tokens/teacher/queries/train.parquet",
        student_corpus=f"{RESULTS}/tokens/student/corpus.parquet",
        student_queries=f"{RESULTS}/tokens/student/queries/train.parquet",
        dev_queries=f"{RESULTS}/tokens/student/queries/dev.parquet",
        dev_qrels=f"{RESULTS}/data/qrels/dev.parquet",
        groups=distillation_groups(),
        code=COMMON_CODE + DISTILL_CODE,
    output:
        model=directory(f"{RESULTS}/models/student-{{method}}"),
        log=f"{RESULTS}/training/student-{{method}}.parquet",
    log:
        f"{LOGS}/train/student-{{method}}.log",
    benchmark:
        f"{BENCHMARKS}/train/student-{{method}}.tsv"
    conda:
        "../envs/lead.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=24 * 60,
    params:
        settings=settings(
            teacher=config["teacher"],
            student=config["student"],
            distillation={
                k: v for k, v in config["distillation"].items() if k != "methods"
            },
        ),
        checkpoints=f"{RESULTS}/checkpoints/student-{{method}}",
        launch=lambda wc, resources: launch(resources),
    shell:
        "{params.launch} distill --method {wildcards.method} --settings {params.settings:q}"
        " --teacher {input.teacher} --student {input.student}"
        " --teacher-corpus-tokens {input.teacher_corpus}"
        " --teacher-query-tokens {input.teacher_queries}"
        " --student-corpus-tokens {input.student_corpus}"
        " --student-query-tokens {input.student_queries} --groups {input.groups}"
        " --dev-query-tokens {input.dev_queries} --dev-qrels {input.dev_qrels}"
        " --out {output.model} --log {output.log} --checkpoint-dir {params.checkpoints}"
        " > {log} 2>&1"
