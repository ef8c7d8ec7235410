"""The `tilesweep` command line.

Subcommands live in `orchestrator.commands.<name>`. Only the module of the
subcommand being run is imported (``tilesweep --help`` imports none), so a quick
command never pays for another's imports.

Errors: `UsageError` (bad input, raised before anything is written; a `SpecError`
gives one line per problem) is printed as one line on stderr with exit 2;
`SweepError` (the sweep cannot go on) as one line with exit 1; a `StorageError`
(object storage that cannot be used, met before or after the measuring; within it the
driver makes it a `SweepError`) as one line with exit 2; Ctrl-C exits 130,
SIGTERM 143 and SIGHUP 129 (`orchestrator.signals`).
Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import typing
from collections.abc import Iterable, Sequence

from orchestrator import signals
from tilesweep.errors import SpecError, StorageError, SweepError, UsageError

# name -> one-line help, in the order `tilesweep --help` lists them.
COMMANDS: dict[str, str] = {
    "plan": "print the tilings, exact resolutions, crops and tokens of a sweep",
    "run": "run a sweep on a Ray cluster (local by default)",
    "fill": "measure only the tilings whose crop counts are missing",
    "status": "what is done, missing and failed, per crop count and tiling",
    "query": "polars SQL over the results",
    "report": "plots, tables and report.html from results",
    "compact": "rewrite finished runs' parts as one Parquet file each (faster reads, same rows)",
}

# The grammar every subcommand follows, as `tilesweep --help` states it.
GRAMMAR = ("Every subcommand takes its flags after its name (-v too) and the results path as --results DIR "
           "(default results, where `run` writes); `query` takes the SQL as its one word.")

EXIT_FAILED = 1
EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors in one line and exits 2."""

    def error(self, message: str) -> typing.NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(EXIT_USAGE)


def build_parser(only: Iterable[str] | None = None) -> argparse.ArgumentParser:
    """The parser; the subcommands in `only` (default: all) get their flags, which imports their modules."""
    wanted = set(COMMANDS if only is None else only)
    parser = _Parser(prog="tilesweep", description="Exact tiling sweeps of vision-language model latency.",
                     epilog=GRAMMAR)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name, help_text in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        # -v after the subcommand too; SUPPRESS keeps a -v given before it from being reset.
        p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging")
        if name in wanted:
            _module(name).add_arguments(p)
    parser.set_defaults(_subparsers=sub.choices)
    return parser


def _module(name: str):
    return importlib.import_module(f"orchestrator.commands.{name}")


def _command_in(argv: Sequence[str]) -> str | None:
    """The subcommand named on the command line (the first word that is not a flag)."""
    return next((a for a in argv if not a.startswith("-")), None)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = _command_in(argv)
    args, extra = build_parser(only=[command] if command in COMMANDS else ()).parse_known_args(argv)
    if extra:  # named by the subcommand they were given to
        args._subparsers[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    prefix = f"tilesweep {args.command}"
    try:
        return int(_module(args.command).main(args) or 0)
    except SpecError as exc:
        for problem in exc.problems:
            sys.stderr.write(f"{prefix}: error: {_one_line(problem)}\n")
        return EXIT_USAGE
    except UsageError as exc:
        sys.stderr.write(f"{prefix}: error: {_one_line(exc)}\n")
        return EXIT_USAGE
    except SweepError as exc:
        sys.stderr.write(f"{prefix}: {_one_line(exc)}\n")
        return EXIT_FAILED
    except StorageError as exc:  # object storage that cannot be used, met outside the measuring loop
        sys.stderr.write(f"{prefix}: error: cannot use {exc.where} ({_one_line(exc.reason)}); check --results (the "
                         "bucket, the endpoint: AWS_ENDPOINT_URL or ?endpoint_override=) and the credentials\n")
        return EXIT_USAGE
    except KeyboardInterrupt as exc:
        sys.stderr.write(f"{prefix}: stopped by {signals.signal_name(exc)}\n")
        return signals.exit_code(exc)


def _one_line(exc: BaseException | str) -> str:
    return " ".join(str(exc).split())


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
