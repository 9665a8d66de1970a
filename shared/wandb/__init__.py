"""Weights & Biases as a run source: the public API (through wandb.Api), history downloads, and the
offline run log reader. Imports shared.table and shared.base; never shared.neptune."""
