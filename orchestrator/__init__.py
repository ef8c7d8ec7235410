"""tilesweep's Ray side: sweep spec, planning, the driver, the Parquet store, queries and the CLI."""
