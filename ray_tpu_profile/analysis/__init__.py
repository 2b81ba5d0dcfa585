"""What a run's traces say: reading them, operations, statistics, verdicts, reports, timeline, plot, diff."""
