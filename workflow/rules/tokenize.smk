# Tokenization, separately for the teacher's and the student's vocabularies. Each role's
# tokenizer is the one saved in its initial model directory (its own, or one trained here).


rule train_tokenizer:
    input:
        corpus=f"{RESULTS}/data/corpus.parquet",
        code=COMMON_CODE + code("tokenization.py", "cli/tokenize.py"),
    output:
        directory(f"{RESULTS}/tokenizers/{{role}}"),
    log:
        f"{LOGS}/train_tokenizer/{{role}}.log",
    conda:
        "../envs/lead.yaml"
    resources:
        runtime=60,
    params:
        settings=lambda wc: settings(**config[wc.role]["tokenizer"]),
    shell:
        "python -m lead train-tokenizer --settings {params.settings:q}"
        " --corpus {input.corpus} --out {output} > {log} 2>&1"


rule init_model:
    input:
        unpack(tokenizer_input),
        code=COMMON_CODE + code("modeling", "cli/models.py"),
    output:
        directory(f"{RESULTS}/models/{{role}}-init"),
    log:
        f"{LOGS}/init_model/{{role}}.log",
    conda:
        "../envs/lead.yaml"
    resources:
        runtime=60,
    params:
        settings=lambda wc: settings(**config[wc.role]),
        tokenizer=lambda wc, input: (
            f"--tokenizer {input.tokenizer}" if "tokenizer" in input.keys() else ""
        ),
        seed=config["distillation"]["optimisation"]["seed"],
    shell:
        "python -m lead init-model --settings {params.settings:q} {params.tokenizer}"
        " --seed {params.seed} --out {output} > {log} 2>&1"


rule tokenize_corpus:
    input:
        model=f"{RESULTS}/models/{{role}}-init",
        corpus=f"{RESULTS}/data/corpus.parquet",
        code=COMMON_CODE + code("tokenization.py", "cli/tokenize.py"),
    output:
        f"{RESULTS}/tokens/{{role}}/corpus.parquet",
    log:
        f"{LOGS}/tokenize/{{role}}-corpus.log",
    benchmark:
        f"{BENCHMARKS}/tokenize/{{role}}-corpus.tsv"
    conda:
        "../envs/lead.yaml"
    resources:
        runtime=60,
        mem_mb=4000,
    params:
        max_length=lambda wc: max_length(wc.role, "passage"),
    shell:
        "python -m lead tokenize --tokenizer {input.model} --input {input.corpus}"
        " --out {output} --max-length {params.max_length} > {log} 2>&1"


rule tokenize_queries:
    input:
        model=f"{RESULTS}/models/{{role}}-init",
        queries=f"{RESULTS}/data/queries/{{split}}.parquet",
        code=COMMON_CODE + code("tokenization.py", "cli/tokenize.py"),
    output:
        f"{RESULTS}/tokens/{{role}}/queries/{{split}}.parquet",
    log:
        f"{LOGS}/tokenize/{{role}}-queries-{{split}}.log",
    conda:
        "../envs/lead.yaml"
    resources:
        runtime=60,
    params:
        max_length=lambda wc: max_length(wc.role, "query"),
    shell:
        "python -m lead tokenize --tokenizer {input.model} --input {input.queries}"
        " --out {output} --max-length {params.max_length} > {log} 2>&1"
