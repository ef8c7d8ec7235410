"""`tilesweep fill --crops 3,6,9,12`: measure only the tilings whose crop counts a run lacks.

Every tiling that gives one of the crop counts (whatever its family, unless
``--family`` names some) is planned, plus any ``--tilings``, minus the configs the
run already holds ok, and measured into the same run (by default the latest one
under ``--results``) with that run's own settings.
"""

from __future__ import annotations

import argparse
import dataclasses

from orchestrator.commands.run import add_arguments as _run_arguments
from orchestrator.commands.run import report_spec_error, resolve_spec
from orchestrator.errors import UsageError
from orchestrator.spec import SpecError, SweepSpec

HELP = "measure only the tilings whose crop counts are missing"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _run_arguments(parser)


def fill_spec(args: argparse.Namespace) -> SweepSpec:
    """The run's spec (the latest run by default) with only what `args` names as the selection.

    Raises:
        UsageError: nothing to fill named, or no run to fill.
        SpecError: bad values, or settings that differ from the run's.
    """
    if args.crops is None and args.tilings is None:
        raise UsageError("fill needs --crops, the crop counts to fill (global crop included), e.g. --crops 3,6,9,12 "
                         "(or --tilings 1x2,2x4)")
    spec = resolve_spec(args, fill=True)
    # Only what is named here decides what fill plans, never the run's own families:
    # every tiling of each crop count, or the named families' tilings of it.
    return dataclasses.replace(spec, families=spec.families if args.family is not None else (),
                               tilings=spec.tilings if args.tilings is not None else ())


def main(args: argparse.Namespace) -> int:
    try:
        spec = fill_spec(args)
    except SpecError as exc:
        return report_spec_error("fill", exc)
    from orchestrator.sweep import execute

    return execute(spec, command="fill")
