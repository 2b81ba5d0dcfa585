"""Profile vLLM on every host of a TPU pod slice at once, orchestrated by Ray."""

__version__ = "0.1.0"
