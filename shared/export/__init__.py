"""Exports: the one pipeline from any source to per-project files, the folder lock, incremental updates.
Imports shared.table and shared.base; the verbs hand it a source, so it never imports a tracker."""
