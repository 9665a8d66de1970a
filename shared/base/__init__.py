"""The base layer: the error model, events (how library code reports), safe text, atomic files, retries,
concurrency helpers. Imports nothing else of shared/."""
