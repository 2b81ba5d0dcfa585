"""What a run's traces say: operations, statistics, verdicts, devices, collectives, reports, timeline, diff."""
