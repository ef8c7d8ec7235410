"""One module per `tilesweep` subcommand.

Each module defines ``HELP`` (one line), ``add_arguments(parser)`` and
``main(args) -> int``. `orchestrator.cli` wires them; a module is imported only
when its subcommand runs, so `tilesweep plan` does not import torch or ray.
"""
