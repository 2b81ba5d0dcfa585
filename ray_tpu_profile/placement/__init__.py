"""Where a run goes: the Ray cluster, TPU slices and placement groups, engines over hosts, local capacity."""
