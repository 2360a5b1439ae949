"""Library commands of the `ampere` CLI (no Dagster here); `orchestration.cli` adds `pipeline`."""

from __future__ import annotations

import argparse
from pathlib import Path

from ampere.data.synth import add_products, generate


def build_parser() -> argparse.ArgumentParser:
    """The parser for the library's own commands."""
    parser = argparse.ArgumentParser(prog="ampere", description="AMPere: cross-domain product retrieval")
    commands = parser.add_subparsers(dest="command", required=True)
    data = commands.add_parser("data", help="dataset tools").add_subparsers(dest="data_command", required=True)
    synth = data.add_parser("synth", help="write a synthetic ROPE-like dataset (deterministic for a seed)")
    synth.add_argument("--products", type=int, default=100, help="number of products (or products to add with --add)")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--out", type=Path, required=True, help="dataset folder")
    synth.add_argument("--add", action="store_true", help="append new products to an existing dataset")
    synth.set_defaults(handler=_synth)
    return parser


def _synth(args: argparse.Namespace) -> None:
    if args.add:
        add_products(args.out, products=args.products, seed=args.seed)
        print(f"added {args.products} products to {args.out}")
    else:
        generate(args.out, products=args.products, seed=args.seed)
        print(f"wrote {args.products} products to {args.out}")


def main(argv: list[str] | None = None) -> None:
    """Entry point for the library commands alone (`python -m ampere.cli`)."""
    args = build_parser().parse_args(argv)
    args.handler(args)


if __name__ == "__main__":
    main()
