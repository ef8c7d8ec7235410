"""One module per `tilesweep` subcommand.

Each module defines ``HELP`` (its one line in ``tilesweep --help``),
``add_arguments(parser)`` and ``main(args) -> int``; `orchestrator.cli` imports
them all to build the parser. They keep heavy imports off that path: torch loads
only with a model, Ray only when a sweep starts, so `tilesweep plan` and
``--help`` import neither. `run` and `fill` write results (through
`orchestrator.sweep`); `status`, `query` and `report` read them (through `store`
and `analysis`); `compact` rewrites a finished run's parts as one file (`store.compact`);
`plan` touches none.
"""

# The subcommands, in the order `tilesweep --help` lists them.
NAMES = ("plan", "run", "fill", "status", "query", "report", "compact")
