"""`tilesweep run`: plan, measure on Ray, write Parquet, print a summary per tiling.

With no arguments it runs the embedded default (the tiny Molmo2 on a local Ray
cluster, families 1xk, 2xk and kx1, warm-up 1, 3 repeats) into ``results/``
under a new run id. ``--run-id`` of an existing run resumes it: the run's own
spec is the base, flags given now are laid over it, and only configs without an
ok result are measured (`orchestrator.resume`).

Exit codes: 0 done (failed configs are rows, not errors), 1 no host could start
or a part could not be written, 2 bad input (nothing written), 128 + the signal's
number when stopped: 130 Ctrl-C, 143 SIGTERM, 129 SIGHUP (resume with the printed
command; `orchestrator.signals`).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import IO, Any

from analysis.noise import advice
from analysis.query import scan, summary
from orchestrator import signals
from orchestrator import spec as specs
from orchestrator.progress import make_progress
from orchestrator.resume import resolve, resume_command
from orchestrator.spec import SweepSpec
from orchestrator.sweep import sweep
from store.fs import location
from store.runs import new_run_id
from tilesweep.text import table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `run` (`fill` shares them): one per spec setting, every default None ("not given")."""
    specs.add_flags(parser)


def main(args: argparse.Namespace) -> int:
    return execute(resolve(args.spec, specs.given(args)), command="run")


def execute(spec: SweepSpec, *, command: str, stdout: IO[str] | None = None, **kwargs: Any) -> int:
    """`orchestrator.sweep.sweep`, then the summary table on stdout; returns the exit code.

    Raises:
        UsageError: bad input found before anything was written.
        SweepError: the sweep could not go on (exit 1 in the CLI).
    """
    stdout = stdout or sys.stdout
    kwargs.setdefault("progress", make_progress())
    spec = dataclasses.replace(spec, run_id=spec.run_id or new_run_id())  # known here, for the resume command
    try:
        result = sweep(spec, command=command, **kwargs)
    except KeyboardInterrupt as exc:  # before the measuring started (or while the run was being recorded)
        sys.stderr.write(f"tilesweep {command}: stopped by {signals.signal_name(exc)}. Resume with:\n"
                         f"  {resume_command(spec, command, spec.run_id)}\n")
        return signals.exit_code(exc)
    stdout.write(summary_text(result.run_dir) + "\n")
    for line in advice(scan(result.run_dir)):  # the configs noise may have bent, and what to do
        stdout.write(line + "\n")
    stdout.flush()
    outcome = result.outcome
    if outcome is not None and outcome.interrupted:
        sys.stderr.write(f"tilesweep {command}: stopped by {signals.signal_name(outcome.stopped_by)}; "
                         f"{outcome.remaining} config(s) not measured. "
                         f"Resume with:\n  {resume_command(spec, command, result.run_id)}\n")
        return signals.exit_code(outcome.stopped_by)
    if outcome is not None and outcome.failed:
        sys.stderr.write(f"tilesweep {command}: {outcome.failed} config(s) failed; see `tilesweep status "
                         f"--run-id {result.run_id} --results {spec.results}`\n")
    return 0


# (header, summary column, format) of the table a sweep ends with.
_SUMMARY_COLUMNS = (
    ("tiling", "tiling", "{}"), ("family", "family", "{}"), ("crops", "crops", "{}"),
    ("img_tok", "image_tokens", "{}"), ("seq_tok", "sequence_tokens", "{}"), ("n", "n", "{}"),
    ("vision_ms", "vision_median_ms", "{:.2f}"), ("proj_ms", "projector_median_ms", "{:.2f}"),
    ("llm_ms", "llm_prefill_median_ms", "{:.2f}"), ("total_ms", "total_median_ms", "{:.2f}"),
    ("llm_sub_ms", "llm_sub_median_ms", "{:.2f}"), ("status", "status", "{}"),
)
# With --decode-tokens: time to first token and per output token, before `status`; left out when all null.
_DECODE_COLUMNS = (("ttft_ms", "ttft_median_ms", "{:.2f}"), ("tpot_ms", "tpot_median_ms", "{:.2f}"))


def summary_text(run_dir: str | Path) -> str:
    """Per tiling: crops, tokens and median stage times, hook method then subtraction (ms), then TTFT and TPOT
    when the run decoded tokens."""
    frame = summary(scan(run_dir)).collect()
    decode = [c for c in _DECODE_COLUMNS if frame[c[1]].null_count() < frame.height]
    columns = [*_SUMMARY_COLUMNS[:-1], *decode, _SUMMARY_COLUMNS[-1]]
    title = (f"run {location(run_dir).name}: {frame.height} config(s), median times in ms "
             "(hook method; llm_sub_ms by subtraction)")
    rows = [[None if row[column] is None else fmt.format(row[column]) for _, column, fmt in columns]
            for row in frame.iter_rows(named=True)]
    return table([h for h, _, _ in columns], rows, right=[True] * len(columns), title=title)
