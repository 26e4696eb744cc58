# Tokenization, separately for the teacher's and the student's vocabularies. Each role's
# tokenizer is the one saved in its initial model directory (its own, or one trained here).


def tokenizer_input(wildcards):
    if config[wildcards.role]["tokenizer"]["train"]:
        return {"tokenizer": f"{RESULTS}/tokenizers/{wildcards.role}"}
    return {}


rule train_tokenizer:
    input:
        corpus=f"{RESULTS}/data/corpus.parquet",
        code=COMMON_CODE + code("tokenization.py", "cli/tokenize.py"),
    output:
        directory(f"{RESULTS}/tokenizers/{{role}}"),
    params:
        settings=lambda wc: settings(**config[wc.role]["tokenizer"]),
    log:
        f"{LOGS}/train_tokenizer/{{role}}.log",
    shell:
        "python -m lead train-tokenizer --settings {params.settings:q}"
        " --corpus {input.corpus} --out {output} > {log} 2>&1"


rule init_model:
    input:
        unpack(tokenizer_input),
        code=COMMON_CODE + code("modeling", "cli/models.py"),
    output:
        directory(f"{RESULTS}/models/{{role}}-init"),
    params:
        settings=lambda wc: settings(**config[wc.role]),
        tokenizer=lambda wc, input: f"--tokenizer {input.tokenizer}" if "tokenizer" in input.keys() else "",
        seed=config["distillation"]["optimisation"]["seed"],
    log:
        f"{LOGS}/init_model/{{role}}.log",
    shell:
        "python -m lead init-model --settings {params.settings:q} {params.tokenizer}"
        " --seed {params.seed} --out {output} > {log} 2>&1"


def max_length(role, kind):
    return config[role][f"{kind}_max_length"]


rule tokenize_corpus:
    input:
        model=f"{RESULTS}/models/{{role}}-init",
        corpus=f"{RESULTS}/data/corpus.parquet",
        code=COMMON_CODE + code("tokenization.py", "cli/tokenize.py"),
    output:
        f"{RESULTS}/tokens/{{role}}/corpus.parquet",
    params:
        max_length=lambda wc: max_length(wc.role, "passage"),
    log:
        f"{LOGS}/tokenize/{{role}}-corpus.log",
    benchmark:
        f"{BENCHMARKS}/tokenize/{{role}}-corpus.tsv"
    resources:
        mem_mb=4000,
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
    params:
        max_length=lambda wc: max_length(wc.role, "query"),
    log:
        f"{LOGS}/tokenize/{{role}}-queries-{{split}}.log",
    shell:
        "python -m lead tokenize --tokenizer {input.model} --input {input.queries}"
        " --out {output} --max-length {params.max_length} > {log} 2>&1"
