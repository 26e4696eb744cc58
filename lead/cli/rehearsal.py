"""Rehearse the MS MARCO passage reproduction without the real data. `generate` writes files in
MS MARCO's names, formats and row counts (collectionandqueries.tar.gz, RocketQA's
marco.tar.gz, the TREC DL 2019/2020 queries and judgments, MD5SUMS, a checksums.yaml config
layer and the manifest rehearsal.json), deterministically from --seed, with text that BM25
and a small dense model can learn from; `serve` serves a folder over HTTP with Range requests,
as MS MARCO's host does, until killed. Point dataset.msmarco.base_url, trec_url and
rocketqa_url (URL/marco.tar.gz) at it."""

from __future__ import annotations

import argparse
from pathlib import Path

from lead.cli import whole

HELP = "generate an MS MARCO-shaped rehearsal collection, or serve a folder over HTTP"
OUTPUTS = {"out": "folder"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    generate = actions.add_parser(
        "generate", help="write the rehearsal files into a new folder",
        description="Write the rehearsal files into --out, a new or empty folder (or one an "
                    "earlier generate made, which is replaced). The same --seed and --passages "
                    "give byte-identical files.")
    generate.add_argument("--out", required=True, type=Path,
                          help="output folder (created; replaced only if generate made it)")
    generate.add_argument(
        "--passages", default="full",
        help="passages: 'full' (8,841,823, MS MARCO's counts) or a whole number >= 1000, every "
             "count scaled by it (default: full)")
    generate.add_argument("--seed", type=whole(0), default=None,
                          help="random seed (default: the generator's, 888)")
    serve = actions.add_parser(
        "serve", help="serve a folder over HTTP (GET, HEAD, Range) until killed",
        description="Serve the files of FOLDER over HTTP in the foreground, printing one line "
                    "with the URL; Ctrl-C or a kill stops it.")
    serve.add_argument("folder", type=Path, help="the folder to serve")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    serve.add_argument("--port", type=whole(0), default=0, help="port (default: a free one)")


def run(args: argparse.Namespace) -> None:
    from lead.data import rehearsal

    if args.action == "generate":
        seed = rehearsal.DEFAULT_SEED if args.seed is None else args.seed
        manifest = rehearsal.generate(args.out, args.passages, seed=seed)
        counts = manifest["counts"]
        print(f"wrote {args.out}: {counts['passages']:,} passages, "
              f"{counts['train_queries']:,} training queries (seed {manifest['seed']})",
              flush=True)
        return
    server = rehearsal.serve(args.folder, args.host, args.port)
    print(f"serving {args.folder} at {server.url}/", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
