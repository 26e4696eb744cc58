"""`python -m lead encode`: embeddings of a tokens file (one shard of it) with a dual encoder."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "encode",
        help="embed tokenized queries or passages with a dual encoder",
        description="Stream a tokens parquet (or one contiguous shard of its rows) through a "
        "dual encoder and write an embeddings parquet in the same row order.",
    )
    parser.add_argument("--model", required=True, type=Path, help="model directory (lead.json)")
    parser.add_argument("--tokens", required=True, type=Path, help="tokens parquet")
    parser.add_argument("--role", required=True, choices=["query", "passage"])
    parser.add_argument("--out", required=True, type=Path, help="embeddings parquet to write")
    parser.add_argument(
        "--shard", type=int, help="encode only this shard (0-based) of the rows; default: all"
    )
    parser.add_argument(
        "--num-shards", type=int, help="number of shards (default: the settings' `shards`)"
    )
    parser.add_argument("--settings", help="the config's `encode` section as JSON")
    parser.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> None:
    from lead.config import parse_settings, resolve
    from lead.encode import encode_file
    from lead.errors import ConfigError

    settings = resolve("encode", parse_settings(args.settings))
    if args.shard is None and args.num_shards is not None:
        raise ConfigError("--num-shards needs --shard")
    shard = args.shard or 0
    num_shards = 1 if args.shard is None else args.num_shards or settings["shards"]
    encode_file(
        args.model, args.tokens, args.role, args.out, settings,
        shard=shard, num_shards=num_shards,
    )
