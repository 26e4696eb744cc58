"""Encode a tokens file (or one shard of it) once at every layer of a frozen dual-encoder
teacher: the layer cache distillation reads instead of running the teacher."""

from __future__ import annotations

import argparse
from pathlib import Path

from lead.cli import whole
from lead.cli.encode import shard_arguments

HELP = "cache a frozen dual-encoder teacher's per-layer vectors of the training texts"
OUTPUTS = {"out": "file"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, type=Path, help="teacher model directory")
    parser.add_argument("--tokens", required=True, type=Path, help="tokens parquet")
    parser.add_argument("--role", required=True, choices=["query", "passage"])
    parser.add_argument("--out", required=True, type=Path, help="layer cache parquet to write")
    parser.add_argument("--shard", type=whole(0),
                        help="encode only this shard (0-based) of the rows")
    parser.add_argument("--num-shards", type=whole(1), help="number of shards")
    parser.add_argument("--settings", help="JSON {teacher_cache: ..., encode: ...} sections")


def run(args: argparse.Namespace) -> None:
    from lead.config import parse_settings, resolve
    from lead.teacher_cache import cache_file

    settings = parse_settings(args.settings)
    encode = resolve("encode", settings.get("encode") or {})
    cache = resolve("distillation", {"teacher_cache": settings.get("teacher_cache") or {}})
    shard, num_shards = shard_arguments(args, encode)
    cache_file(args.model, args.tokens, args.role, args.out, cache["teacher_cache"],
               batch_size=encode["batch_size"], shard=shard, num_shards=num_shards)
