"""What can go and what it costs: torch-pruning's dependency graph, channel groups, their MACs / parameters, the
replayable pruned structure, weight masks and the removal :class:`~earlyprune.graph.plan.Plan`."""
