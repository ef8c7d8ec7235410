"""tilesweep: what every room of the project shares, and nothing else.

The rooms, bottom to top (a test enforces that imports point down only)::

    tilesweep     exception types, declared settings, plain-text tables (pure Python)
    tilings       the preprocessors' exact arithmetic (pure Python)
    workers       the measuring instrument (torch + transformers, no Ray)
    store         the results store: schema, atomic parts, manifest, scan, invariant
    analysis      query tables, latency model, report        (reads the store)
    orchestrator  sweep spec, plan, Ray driver, the CLI      (writes the store)
"""
