"""The run table: its schema (defined once), run records and their flattening, tidy history, per-series
summaries, the source contract every tracker implements, and reading the files the exporters write.
Imports shared.base only."""
