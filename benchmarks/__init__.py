"""tilesweep's benchmarks: ``python -m benchmarks`` (``make bench``).

1. ``scheduling`` — the real driver with simulated hosts (`benchmarks.simhost`) on a
   local Ray cluster of 64 logical GPUs: makespan over its lower bound, against a
   static round-robin split of the same configs.
2. ``speedup`` — the same tiny-model sweep three ways in one run: tilesweep with 2
   CPU workers, a sequential loop, a Ray Tune grid search; wall-clock ratios and
   time to first result.
3. ``overhead`` — the hook timers' cost: interleaved forwards with and without hooks.
4. ``additivity`` — from tilesweep's sweep: how much of ``t_total`` the stages miss,
   and how stable each stage is across repeats.

Each writes ``benchmarks/results/<name>.json`` (figures, details, the machine);
``benchmarks/results/README.md`` is the table of all figures.
"""
