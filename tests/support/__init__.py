"""What the tests share: running the CLI, real local clusters, fakes of host actors, fault hooks."""
