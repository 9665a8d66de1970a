"""Analysis of exported runs: filters, rankings, groups, pivots, Pareto fronts, enrichment, aggregation,
figures and the HTML report, one view per analysis mode. Imports shared.table and shared.base; never a
tracker."""
