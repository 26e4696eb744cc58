"""Stream a tokens parquet (or one contiguous shard of its rows) through a dual encoder and
write an embeddings parquet in the same row order."""

from __future__ import annotations

import argparse
from pathlib import Path

from lead.cli import whole

HELP = "embed tokenized queries or passages with a dual encoder"
OUTPUTS = {"out": "file"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, type=Path, help="model directory (lead.json)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--tokens", type=Path, help="tokens parquet")
    source.add_argument("--from-cache", type=Path, metavar="LAYER_CACHE",
                        help="read the final vectors off the model's layer cache of these "
                        "texts (cache-teacher) instead of running the model")
    parser.add_argument("--role", required=True, choices=["query", "passage"])
    parser.add_argument("--out", required=True, type=Path, help="embeddings parquet to write")
    parser.add_argument(
        "--shard", type=whole(0), help="encode only this shard (0-based) of the rows; default: all"
    )
    parser.add_argument(
        "--num-shards", type=whole(1), help="number of shards (default: the settings' `shards`)"
    )
    parser.add_argument("--settings", help="the config's `encode` section as JSON")


def shard_arguments(args: argparse.Namespace, settings: dict) -> tuple[int, int]:
    from lead.errors import ConfigError

    if args.shard is None and args.num_shards is not None:
        raise ConfigError("--num-shards needs --shard")
    if args.shard is None:
        return 0, 1
    return args.shard, settings["shards"] if args.num_shards is None else args.num_shards


def run(args: argparse.Namespace) -> None:
    from lead.config import parse_settings, resolve
    from lead.retrieval.encode import encode_file

    settings = resolve("encode", parse_settings(args.settings))
    if args.from_cache is not None:
        from lead.teacher_cache import embeddings_from_cache

        embeddings_from_cache(args.model, args.from_cache, args.out, dtype=settings["dtype"])
        return
    shard, num_shards = shard_arguments(args, settings)
    encode_file(args.model, args.tokens, args.role, args.out, settings,
                shard=shard, num_shards=num_shards)
