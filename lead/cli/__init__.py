"""Thin command-line entry points, one module per stage.

Each module defines `register(subparsers)`, which adds its subcommand(s) and sets
`run=<function(args)>`; heavy imports happen inside the run functions so that `--help` and
light stages start fast.
"""
