"""store: the results store. Where measurements land, how they are read back, and what a run must hold.

Bottom to top: `schema` (the Arrow schema of a row, derived from `workers.Record`),
`fs` (where results live: a local directory or a URI on object storage, and the few
operations the store does there), `parts` (file names, readable parts, which attempt
readers keep), `scan` (one lazy polars frame over the rows), `manifest` (the typed run
manifest), `runs` (one run's directory: atomic writes, outcomes), `lock` (one driver per
run), `invariant` (the check of a finished run), `compact` (a finished run's parts as one file).
Only the driver writes; everything else reads. Imports `workers`, `tilings` and
`tilesweep`, never `analysis` or `orchestrator`. Import what you need from its
module (``from store.runs import RunStore``): the package itself imports nothing,
so reading a manifest does not load polars.
"""
