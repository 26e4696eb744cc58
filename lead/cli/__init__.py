"""One module per stage of `python -m lead` (the table is lead.__main__.STAGES).

Each module's docstring is its stage's description; it defines HELP (one line),
add_arguments(parser) and run(args), and OUTPUTS when it writes any: each output argument and
whether it is a "file" or a "folder", which lead.__main__ claims (lead.io.claim_output) before
the stage does any work. Heavy imports stay inside run(), so `--help` is fast.
"""


def whole(minimum: int = 1):
    """An argparse type: a whole number >= `minimum`, refused at parse time with the option
    named (before any work)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise ValueError(text)
        return value

    parse.__name__ = f"whole number >= {minimum}"
    return parse
