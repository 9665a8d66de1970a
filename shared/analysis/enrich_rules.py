"""The default enrichment rules as plain data (no polars: aggregate_runs.py's help names their columns)."""

from __future__ import annotations

from dataclasses import dataclass

_TOKEN_END = r"(?:_|$)"
_HYPER = r"(?:_(?:k|s|seed|lr|wd|eps)\d|$)"  # what follows a dataset name: a hyperparameter or the end
_NUMBER = r"([0-9]*\.?[0-9]+(?:e-?[0-9]+)?)"


@dataclass(frozen=True)
class Source:
    """One place a value comes from: column `column` as is, through a one-group regex, or a constant on match."""

    column: str
    pattern: str | None = None
    value: str | None = None
    strict: bool = False  # named in a --rules file: the column must exist

    @property
    def is_config(self) -> bool:
        from shared.table.schema import CONFIG_PREFIX  # not while aggregate_runs.py parses its flags

        return self.column.startswith(CONFIG_PREFIX)


@dataclass(frozen=True)
class ColumnRule:
    """How one enrichment column is made: its sources in precedence order (config first), type and default."""

    name: str
    dtype: str = "string"
    sources: tuple[Source, ...] = ()
    default: str | None = None


def _config(*columns: str) -> tuple[Source, ...]:
    return tuple(Source(c) for c in columns)


DEFAULT_RULES: tuple[ColumnRule, ...] = (
    ColumnRule(
        "protocol",
        sources=(
            *_config("config_protocol", "config_data_protocol"),
            Source("config_data_same_graph_all_splits", r"(?i)^true$", "single_graph"),
            Source("config_data__target_", r"SingleGraph", "single_graph"),
            Source("name", rf"(?i)(?:^|_)single_graph{_TOKEN_END}", "single_graph"),
            Source("name", rf"(?i)(?:^|_)dist(?:ribution)?{_TOKEN_END}", "distribution"),
        ),
        default="distribution",
    ),
    ColumnRule(
        "stage",
        sources=(*_config("config_stage"), Source("name", rf"(?i)(?:^|_)(stage\d+[a-z]?){_TOKEN_END}")),
    ),
    ColumnRule(
        "arch",
        sources=(
            *_config("config_model_type", "config_model_arch", "config_arch"),
            Source(
                "name",
                r"(?i)(?:^|_)((?:digress|gnn|spectral)(?:_(?:transformer|default|gnn|all|qk|v|linear|spectral|pe))*"
                rf"|filter_bank|self_attention|linear_pe|asymmetric|mlp){_TOKEN_END}",
            ),
        ),
    ),
    ColumnRule(
        "model_type",
        sources=(
            *(
                Source(column, rf"(?i){family}", family)
                for column in ("config_model__target_", "config_model_target")
                for family in ("spectral", "digress", "gnn")
            ),
            Source("arch", r"(?i)^(digress|gnn|spectral)"),
            Source("arch", r"(?i)^(?:filter_bank|self_attention|linear_pe|asymmetric)$", "spectral"),
        ),
    ),
    ColumnRule(
        "k", "int", (*_config("config_model_k", "config_k"), Source("name", rf"(?:^|_)k(\d+){_TOKEN_END}"))
    ),
    ColumnRule(
        "lr_parsed",
        "float",
        (
            *_config("config_optimizer_lr", "config_learning_rate", "config_lr"),
            Source("name", rf"(?i)(?:^|_)lr{_NUMBER}{_TOKEN_END}"),
        ),
    ),
    ColumnRule(
        "wd_parsed",
        "float",
        (
            *_config("config_optimizer_weight_decay", "config_weight_decay", "config_wd"),
            Source("name", rf"(?i)(?:^|_)wd{_NUMBER}{_TOKEN_END}"),
        ),
    ),
    ColumnRule(
        "seed_parsed",
        "int",
        (*_config("config_seed"), Source("name", rf"(?i)(?:^|_)(?:s|seed)(\d+){_TOKEN_END}")),
    ),
    ColumnRule(
        "dataset",
        sources=(
            *_config("config_data_graph_type", "config_data_dataset", "config_dataset"),
            Source(
                "name",
                r"(?i)(?:^|_)(ring_of_cliques|sbm|tree|regular|erdos_renyi|planar|grid|ego|community|lfr"
                rf"|watts_strogatz|barabasi_albert|qm9){_TOKEN_END}",
            ),
            Source("name", rf"(?i)(?:^|_)(pyg_[a-z0-9]+){_HYPER}"),
        ),
    ),
)
ENRICHMENT_COLUMNS = tuple(rule.name for rule in DEFAULT_RULES)
