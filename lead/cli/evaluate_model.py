"""Score any model on any collection from raw text: a lead model directory, a
sentence-transformers or Hugging Face folder, `package:minilm`, or a hub id from the local
Hugging Face cache, on a BEIR directory or corpus/queries/qrels files. Writes run.parquet,
run.trec, summary.parquet, per_query.parquet and summary.md, and prints the table."""

from __future__ import annotations

import argparse
from pathlib import Path

from lead.cli import whole

HELP = "score any model on any collection, from raw text (zero-shot evaluation)"
OUTPUTS = {"out": "folder"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True,
                        help="model directory, package:NAME, or a cached hub id")
    parser.add_argument("--collection", type=Path, help="a BEIR directory")
    parser.add_argument("--corpus", type=Path,
                        help="corpus file: id<TAB>text or id<TAB>title<TAB>text")
    parser.add_argument("--queries", type=Path, help="queries file: id<TAB>text")
    parser.add_argument("--qrels", type=Path, help="judgments: qid Q0 docid grade")
    parser.add_argument("--split", default="test", help="the split to score (default: test)")
    parser.add_argument("--out", required=True, type=Path, help="output folder (replaced)")
    chosen = parser.add_mutually_exclusive_group()
    chosen.add_argument("--measures", nargs="+", metavar="MEASURE",
                        help="ir_measures names (default: those that suit --depth)")
    parser.add_argument("--depth", type=whole(1), default=1000, help="passages retrieved per query")
    parser.add_argument("--relevance-level", type=whole(1), default=1,
                        help="minimum grade that binary measures count as relevant")
    parser.add_argument("--batch-size", type=whole(1), default=128, help="encoding batch size")
    parser.add_argument("--query-max-length", type=whole(2),
                        help="query tokens, at most (a model folder's own when not given)")
    parser.add_argument("--passage-max-length", type=whole(2),
                        help="passage tokens, at most (a model folder's own when not given)")
    scoring = parser.add_argument_group(
        "how the model scores (default: as its own library scores it: a lead or "
        "sentence-transformers folder's own settings; for a Hugging Face folder without "
        "sentence-transformers files, sentence-transformers' defaults, mean pooling and cosine)")
    scoring.add_argument("--pooling", choices=["cls", "mean"])
    scoring.add_argument("--similarity", choices=["dot", "cosine"])
    scoring.add_argument("--query-prompt", metavar="TEXT",
                         help='text put before every query (e.g. "query: "; "" for none)')
    scoring.add_argument("--passage-prompt", metavar="TEXT",
                         help='text put before every passage (e.g. "passage: "; "" for none)')


def run(args: argparse.Namespace) -> None:
    from lead.evaluation.evaluate_model import collection_settings, evaluate_model
    from lead.evaluation.measures import default_measures, parse_measures

    measures = args.measures or default_measures(args.depth)
    parse_measures(measures, args.relevance_level)  # before the collection is encoded
    dataset = collection_settings(args.collection, args.corpus, args.queries, args.qrels,
                                  args.split)
    scoring = {key: getattr(args, key) for key in (
        "query_max_length", "passage_max_length", "pooling", "similarity", "query_prompt",
        "passage_prompt")}
    out = evaluate_model(
        args.model, dataset, args.out, split=args.split,
        measures=measures,
        relevance_level=args.relevance_level, encode={"batch_size": args.batch_size},
        search={"depth": args.depth}, scoring=scoring,
        arguments={key: value for key, value in vars(args).items() if key != "debug"},
    )
    print((out / "summary.md").read_text(encoding="utf-8"), end="")
