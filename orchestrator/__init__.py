"""orchestrator: the sweep machinery and the `tilesweep` CLI.

`spec` (what to measure, declared once as settings), `resume` (the spec of a
resumed run or a fill), `plan` (tilings → configs with ids and costs), `sweep`
(one sweep end to end), `driver` and `pool` (the Ray actors and the dynamic
queue), `cluster` (connecting, sizing the actors), `preflight` (checks before
anything starts), `progress`, and `cli` with one module per subcommand in
`commands`. It writes results through `store`; only the commands that show
results (`run`'s table, `query`, `report`) import `analysis`.
"""
