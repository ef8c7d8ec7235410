"""`tilesweep fill --crops 3,6,9,12`: measure only the tilings whose crop counts a run lacks.

Every tiling that gives one of the crop counts (whatever its family, unless
``--family`` names some) is planned, plus any ``--tilings``, minus the configs the
run already holds ok, and measured into the same run (by default the latest one
under ``--results``) with that run's own settings (`orchestrator.resume.fill_spec`).
`fill` never starts a run: a ``--run-id`` that names none is an error (exit 2)
listing the runs there, raised before Ray starts or anything is written.
"""

from __future__ import annotations

import argparse

from orchestrator import spec as specs
from orchestrator.commands.run import add_arguments as add_run_arguments
from orchestrator.commands.run import execute
from orchestrator.resume import fill_spec

RUN_ID_HELP = "the run to fill, an existing run id (default: the latest run under --results)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The same flags as `run`; only ``--run-id`` means something else here (an existing run, the latest by default)."""
    add_run_arguments(parser)
    for action in parser._actions:
        if action.dest == "run_id":
            action.help = RUN_ID_HELP


def main(args: argparse.Namespace) -> int:
    return execute(fill_spec(args.spec, specs.given(args)), command="fill")
