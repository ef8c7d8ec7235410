"""`tilesweep fill --crops 3,6,9,12`: measure only the tilings whose crop counts a run lacks.

Every tiling that gives one of the crop counts (whatever its family, unless
``--family`` names some) is planned, plus any ``--tilings``, minus the configs the
run already holds ok, and measured into the same run (by default the latest one
under ``--results``) with that run's own settings (`orchestrator.resume.fill_spec`).
"""

from __future__ import annotations

import argparse

from orchestrator import spec as specs
from orchestrator.commands.run import add_arguments as add_arguments  # the same flags as `run`
from orchestrator.commands.run import execute
from orchestrator.resume import fill_spec


def main(args: argparse.Namespace) -> int:
    return execute(fill_spec(args.spec, specs.given(args)), command="fill")
