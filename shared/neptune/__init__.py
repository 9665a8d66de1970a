"""Neptune as a run source: neptune-exporter archives, .neptune offline folders and live servers (through
the neptune client). Imports shared.table and shared.base; never shared.wandb."""
