"""The results path, given the same way to every subcommand: ``--results DIR``, default `run`'s (``results``).

`query` and `report` also take the older form with the path as their first
positional word; that form is deprecated but still accepted (it is unambiguous:
`query` takes one or two words, `report` none or one). Naming the path both ways
is an error.
"""

from __future__ import annotations

import argparse

from orchestrator.spec import SweepSpec
from tilesweep.errors import UsageError

DEFAULT_RESULTS = SweepSpec().results


def add_results_argument(parser: argparse.ArgumentParser, *, positional_form: str | None = None) -> None:
    """``--results DIR``; its default is resolved by `results_of` (None here tells "not given" apart)."""
    also = (f". The older `tilesweep {positional_form}` still works, deprecated" if positional_form else "")
    parser.add_argument("--results", metavar="DIR", default=None,
                        help=f"results root (a directory, or a URI such as s3://BUCKET/PREFIX), or one run "
                             f"directory; default {DEFAULT_RESULTS}, where `run` writes{also}")


def results_of(args: argparse.Namespace, positional: str | None, command: str) -> str:
    """The results path: ``--results``, the deprecated positional one, or the default.

    Raises:
        UsageError: both were given.
    """
    if positional is not None and args.results is not None and positional != args.results:
        raise UsageError(f"results path given twice, as --results {args.results!r} and as the word {positional!r}; "
                         f"pass it once, as --results DIR (tilesweep {command} --help)")
    return args.results or positional or DEFAULT_RESULTS
