"""One module per stage of `python -m lead` (the table is lead.__main__.STAGES).

Each module's docstring is its stage's description; it defines HELP (one line),
add_arguments(parser) and run(args). Heavy imports stay inside run(), so `--help` is fast.
"""
