"""The per-host side of a run: the Ray actor that owns one vLLM engine, its files, and the tiny model."""
