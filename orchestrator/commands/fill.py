"""`tilesweep fill --crops 3,6,9,12`: measure only the tilings whose crop counts a run lacks.

Every tiling that gives one of the crop counts (whatever its family) is planned,
minus the configs the run already holds ok, and measured into the same run (by
default the latest one under ``--results``) with that run's own settings.
"""

from __future__ import annotations

import argparse
import dataclasses

from orchestrator.commands.run import add_arguments as _run_arguments
from orchestrator.commands.run import report_spec_error, resolve_spec
from orchestrator.errors import UsageError
from orchestrator.spec import SpecError

HELP = "measure only the tilings whose crop counts are missing"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _run_arguments(parser)


def main(args: argparse.Namespace) -> int:
    if args.crops is None:
        raise UsageError("fill needs --crops, the crop counts to fill (global crop included), e.g. --crops 3,6,9,12")
    if args.tilings is not None or args.family is not None:
        raise UsageError("fill takes --crops only; to measure given tilings or families use `tilesweep run "
                         "--run-id ID --tilings ...`")
    try:
        spec = resolve_spec(args, fill=True)
    except SpecError as exc:
        return report_spec_error("fill", exc)
    # Only the crop counts decide what fill plans: never the run's families or tilings.
    spec = dataclasses.replace(spec, families=(), tilings=())
    from orchestrator.sweep import execute

    return execute(spec, command="fill")
