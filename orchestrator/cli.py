"""The `tilesweep` command line.

Subcommands live in `orchestrator.commands.<name>`; see that package's docstring.
Bad input anywhere before work starts is a `ValueError` (or `UsageError`): the CLI
prints it as one line on stderr and exits 2, having written nothing.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import typing

from orchestrator.errors import UsageError

# name -> (module, one-line help). Kept here so `tilesweep --help` needs no imports.
COMMANDS: dict[str, tuple[str, str]] = {
    "plan": ("orchestrator.commands.plan", "print the tilings, exact resolutions, crops and tokens of a sweep"),
    "run": ("orchestrator.commands.run", "run a sweep on a Ray cluster (local by default)"),
    "fill": ("orchestrator.commands.fill", "measure only the tilings whose crop counts are missing"),
    "status": ("orchestrator.commands.status", "what is done, missing and failed, per crop count and tiling"),
    "query": ("orchestrator.commands.query", "polars SQL over the results (table `results`, `summary`)"),
    "report": ("orchestrator.commands.report", "plots, tables and report.html from results"),
}

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors in one line and exits 2."""

    def error(self, message: str) -> typing.NoReturn:
        sys.stderr.write(f"tilesweep {self.prog.split()[-1]}: error: {message}\n")
        raise SystemExit(EXIT_USAGE)



def build_parser(commands: dict[str, tuple[str, str]] | None = None) -> argparse.ArgumentParser:
    commands = COMMANDS if commands is None else commands
    parser = _Parser(prog="tilesweep", description="Exact tiling sweeps of vision-language model latency.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name, (module_name, help_text) in commands.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        module = _load(module_name)
        if module is not None:
            module.add_arguments(p)
        p.set_defaults(_module=module_name)
    return parser


def _load(module_name: str):
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:  # subcommand not built yet
            return None
        raise


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    module = _load(args._module)
    if module is None:
        sys.stderr.write(f"tilesweep {args.command}: not available in this version\n")
        return EXIT_USAGE
    try:
        return int(module.main(args) or 0)
    except (UsageError, ValueError) as exc:
        sys.stderr.write(f"tilesweep {args.command}: error: {_one_line(exc)}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        sys.stderr.write(f"tilesweep {args.command}: interrupted\n")
        return 130


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
