"""Top-k and Pareto queries: the engine over tidy points, constraints, TopkQuery and its two faces
WandbQuery and NeptuneQuery (which open the trackers' sources). Imports the trackers, shared.table and
shared.base."""
