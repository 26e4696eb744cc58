# Warm-ups, the frozen teacher's layer cache and distillation: GPU rules. A rule given
# `gpu: N` (N > 1) in a profile runs under `torchrun --nproc_per_node N`; on CPU the same path
# runs gloo processes.


rule warmup:
    """Runs `python -m lead warmup` (lead/cli/warmup.py, lead/training/loop.py): contrastive
    training of one model, the teacher's warm-up or the student's pre-training."""
    input:
        model=f"{RESULTS}/models/{{role}}-init",
        corpus=f"{RESULTS}/tokens/{{role}}/corpus.parquet",
        queries=f"{RESULTS}/tokens/{{role}}/queries/train.parquet",
        dev_queries=f"{RESULTS}/tokens/{{role}}/queries/dev.parquet",
        dev_qrels=f"{RESULTS}/data/qrels/dev.parquet",
        groups=warm_groups(),
    output:
        model=directory(f"{RESULTS}/models/{{role}}-warm"),
        log=f"{RESULTS}/training/{{role}}-warm.parquet",
    log:
        f"{LOGS}/train/{{role}}-warm.log",
    benchmark:
        f"{BENCHMARKS}/train/{{role}}-warm.tsv"
    conda:
        "../envs/lead.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=24 * 60,
    params:
        settings=lambda wc: settings(
            model=config[wc.role], optimisation=warmup_section(wc.role)["optimisation"]
        ),
        steps=lambda wc: warmup_section(wc.role)["optimisation"]["steps"],
        checkpoints=f"{RESULTS}/checkpoints/{{role}}-warm",
        launch=lambda wc, resources: launch(resources),
        code=code("warmup"),
    message:
        job_message(
            "warmup: the {wildcards.role}, {params.steps} steps (follow: tail -f {log})"
        )
    shell:
        "python -m lead.gpus {resources.gpu} --"
        " {params.launch} warmup --settings {params.settings:q} --model {input.model:q}"
        " --corpus-tokens {input.corpus:q} --query-tokens {input.queries:q}"
        " --groups {input.groups:q} --dev-query-tokens {input.dev_queries:q}"
        " --dev-qrels {input.dev_qrels:q} --out {output.model:q} --log {output.log:q}"
        " --checkpoint-dir {params.checkpoints:q} > {log:q} 2>&1"


rule cache_teacher_queries:
    """Runs `python -m lead cache-teacher` (lead/cli/cache_teacher.py, lead/teacher_cache.py):
    the frozen teacher's per-layer vectors of the training queries."""
    input:
        model=model_dir(PLAN.distillation_teacher),
        tokens=f"{RESULTS}/tokens/teacher/queries/train.parquet",
    output:
        f"{RESULTS}/teacher_cache/queries.parquet",
    log:
        f"{LOGS}/cache_teacher/queries.log",
    benchmark:
        f"{BENCHMARKS}/cache_teacher/queries.tsv"
    # First when cores are free: every response and LEAD student waits for the cache.
    priority: 10
    conda:
        "../envs/lead.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=12 * 60,
    params:
        settings=settings(
            teacher_cache=config["distillation"]["teacher_cache"],
            encode=config["encode"],
        ),
        code=code("cache-teacher"),
    message:
        job_message(
            "cache_teacher_queries: the frozen teacher's layers of the training queries"
        )
    shell:
        "python -m lead.gpus {resources.gpu} --"
        " python -m lead cache-teacher --model {input.model:q} --tokens {input.tokens:q}"
        " --role query --settings {params.settings:q} --out {output:q} > {log:q} 2>&1"


rule cache_teacher_corpus:
    """Runs `python -m lead cache-teacher` (lead/cli/cache_teacher.py, lead/teacher_cache.py):
    the frozen teacher's per-layer vectors of one corpus shard."""
    input:
        model=model_dir(PLAN.distillation_teacher),
        tokens=f"{RESULTS}/tokens/teacher/corpus.parquet",
    output:
        f"{RESULTS}/teacher_cache/corpus/{{shard}}.parquet",
    log:
        f"{LOGS}/cache_teacher/corpus-{{shard}}.log",
    benchmark:
        f"{BENCHMARKS}/cache_teacher/corpus-{{shard}}.tsv"
    # First when cores are free: every response and LEAD student waits for the cache.
    priority: 10
    conda:
        "../envs/lead.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=12 * 60,
    params:
        settings=settings(
            teacher_cache=config["distillation"]["teacher_cache"],
            encode=config["encode"],
        ),
        shards=len(SHARDS),
        code=code("cache-teacher"),
    message:
        job_message(
            "cache_teacher_corpus: the frozen teacher's layers of corpus shard {wildcards.shard}"
        )
    shell:
        "python -m lead.gpus {resources.gpu} --"
        " python -m lead cache-teacher --model {input.model:q} --tokens {input.tokens:q}"
        " --role passage --shard {wildcards.shard} --num-shards {params.shards}"
        " --settings {params.settings:q} --out {output:q} > {log:q} 2>&1"


rule distill:
    """Runs `python -m lead distill` (lead/cli/distill.py, lead/training/loop.py,
    lead/training/distillation.py): one method or variant, one seed."""
    input:
        unpack(distill_inputs),
    output:
        model=directory(f"{RESULTS}/models/student-{{student}}"),
        log=f"{RESULTS}/training/student-{{student}}.parquet",
    log:
        f"{LOGS}/train/student-{{student}}.log",
    benchmark:
        f"{BENCHMARKS}/train/student-{{student}}.tsv"
    conda:
        "../envs/lead.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=24 * 60,
    params:
        method=lambda wc: STUDENTS[wc.student].method,
        steps=lambda wc: STUDENTS[wc.student].distillation["optimisation"]["steps"],
        settings=lambda wc: settings(
            teacher=config["teacher"],
            student=config["student"],
            distillation=STUDENTS[wc.student].distillation,
        ),
        options=distill_options,
        checkpoints=f"{RESULTS}/checkpoints/student-{{student}}",
        launch=lambda wc, resources: launch(resources),
        code=code("distill"),
    message:
        job_message(
            "distill: student-{wildcards.student} ({params.method}, {params.steps} steps;"
            " follow: tail -f {log})"
        )
    shell:
        "python -m lead.gpus {resources.gpu} --"
        " {params.launch} distill --method {params.method} --settings {params.settings:q}"
        " --teacher {input.teacher:q} --student {input.student:q}"
        " --teacher-corpus-tokens {input.teacher_corpus:q}"
        " --teacher-query-tokens {input.teacher_queries:q}"
        " --student-corpus-tokens {input.student_corpus:q}"
        " --student-query-tokens {input.student_queries:q} --groups {input.groups:q}"
        " --dev-query-tokens {input.dev_queries:q} --dev-qrels {input.dev_qrels:q}"
        " {params.options:q} --out {output.model:q} --log {output.log:q}"
        " --checkpoint-dir {params.checkpoints:q} > {log:q} 2>&1"
