"""analysis: what the results say. Reads the store, never writes it.

`query` (summary, by crops, by tokens, missing, method gap, additivity: lazy polars
frames over `store.scan`), `sql` (the tables `tilesweep query` sees), `latency_model`
(least-squares cost per crop and per token, separability), `report` with its data
(`report_data`), figures (`report_plots`) and renderers (`tables`). Imports `store`,
`workers` (the record's constants), `tilings` and `tilesweep`; never `orchestrator`.

    from analysis import query, latency_model
    lf = query.scan("results")
"""
