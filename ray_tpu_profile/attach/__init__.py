"""`attach`: profile a live vLLM deployment through a vLLM plugin, a registry and a per-node actor."""
