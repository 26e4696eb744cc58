# Tokenization, separately for the teacher's and the student's vocabularies. Each role's
# tokenizer is the one saved in its initial model directory (its own, or one trained here).


rule train_tokenizer:
    """Runs `python -m lead train-tokenizer` (lead/cli/train_tokenizer.py, lead/tokenization.py)."""
    input:
        corpus=f"{RESULTS}/data/corpus.parquet",
    output:
        directory(f"{RESULTS}/tokenizers/{{role}}"),
    log:
        f"{LOGS}/train_tokenizer/{{role}}.log",
    benchmark:
        f"{BENCHMARKS}/train_tokenizer/{{role}}.tsv"
    conda:
        "../envs/lead.yaml"
    resources:
        runtime=60,
    params:
        settings=lambda wc: settings(**config[wc.role]["tokenizer"]),
        code=code("train-tokenizer"),
    message:
        job_message("train_tokenizer: the {wildcards.role}'s vocabulary")
    shell:
        "python -m lead train-tokenizer --settings {params.settings:q}"
        " --corpus {input.corpus:q} --out {output:q} > {log:q} 2>&1"


rule init_model:
    """Runs `python -m lead init-model` (lead/cli/init_model.py, lead/modeling/init.py)."""
    input:
        unpack(tokenizer_input),
    output:
        directory(f"{RESULTS}/models/{{role}}-init"),
    log:
        f"{LOGS}/init_model/{{role}}.log",
    benchmark:
        f"{BENCHMARKS}/init_model/{{role}}.tsv"
    conda:
        "../envs/lead.yaml"
    resources:
        runtime=60,
    params:
        settings=lambda wc: settings(**config[wc.role]),
        init=lambda wc: config[wc.role]["init"],
        tokenizer=lambda wc, input: (
            ["--tokenizer", input.tokenizer] if "tokenizer" in input.keys() else []
        ),
        seed=config["distillation"]["optimisation"]["seed"],
        code=code("init-model"),
    message:
        job_message("init_model: the {wildcards.role} from {params.init}")
    shell:
        "python -m lead init-model --settings {params.settings:q} {params.tokenizer:q}"
        " --seed {params.seed} --out {output:q} > {log:q} 2>&1"


rule tokenize_corpus:
    """Runs `python -m lead tokenize` (lead/cli/tokenize.py, lead/tokenization.py)."""
    input:
        model=f"{RESULTS}/models/{{role}}-init",
        corpus="{root}/data/corpus.parquet",
    output:
        "{root}/tokens/{role}/corpus.parquet",
    log:
        "{root}/logs/tokenize/{role}-corpus.log",
    benchmark:
        "{root}/benchmarks/tokenize/{role}-corpus.tsv"
    conda:
        "../envs/lead.yaml"
    # MS MARCO's 8.8M passages: 21 min of CPU, 39 min on 2 shared cores, 2.1 GB
    # (docs/rehearsal.md).
    resources:
        runtime=2 * 60,
        mem_mb=4000,
    params:
        max_length=lambda wc: config[wc.role]["passage_max_length"],
        code=code("tokenize"),
    message:
        job_message("tokenize_corpus: {wildcards.root}, {wildcards.role} tokens")
    shell:
        "python -m lead tokenize --tokenizer {input.model:q} --input {input.corpus:q}"
        " --out {output:q} --max-length {params.max_length} > {log:q} 2>&1"


rule tokenize_queries:
    """Runs `python -m lead tokenize` (lead/cli/tokenize.py, lead/tokenization.py)."""
    input:
        model=f"{RESULTS}/models/{{role}}-init",
        queries="{root}/data/queries/{split}.parquet",
    output:
        "{root}/tokens/{role}/queries/{split}.parquet",
    log:
        "{root}/logs/tokenize/{role}-queries-{split}.log",
    benchmark:
        "{root}/benchmarks/tokenize/{role}-queries-{split}.tsv"
    conda:
        "../envs/lead.yaml"
    resources:
        runtime=60,
    params:
        max_length=lambda wc: config[wc.role]["query_max_length"],
        code=code("tokenize"),
    message:
        job_message(
            "tokenize_queries: {wildcards.root} {wildcards.split}, {wildcards.role} tokens"
        )
    shell:
        "python -m lead tokenize --tokenizer {input.model:q} --input {input.queries:q}"
        " --out {output:q} --max-length {params.max_length} > {log:q} 2>&1"
