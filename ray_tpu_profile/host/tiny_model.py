"""A random-weight tiny Llama, built locally so the embedded default needs no hub.

vLLM reads it like any checkpoint (config.json + safetensors). head_dim is 32
because the CPU attention backend refuses 16.
"""

from __future__ import annotations

import json
from pathlib import Path

TINY_MODEL_SPEC = {
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 1024,
    "max_position_embeddings": 2048,
}
# Bump when TINY_MODEL_SPEC or the build changes so cached copies are rebuilt.
TINY_MODEL_VERSION = 1
_MARKER = "ray_tpu_profile_tiny_model.json"


def default_tiny_model_dir() -> Path:
    """Cache location: $XDG_CACHE_HOME (or ~/.cache)/ray-tpu-profile/tiny-llama-v<N>."""
    from ray_tpu_profile.core.files import cache_root

    return cache_root() / f"tiny-llama-v{TINY_MODEL_VERSION}"


def is_built(model_dir: Path) -> bool:
    marker = model_dir / _MARKER
    if not marker.is_file():
        return False
    try:
        built = json.loads(marker.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return False  # a marker cut short or garbled: the model is built again
    return isinstance(built, dict) and built.get("version") == TINY_MODEL_VERSION


def ensure_tiny_model(model_dir: Path | None = None, seed: int = 0) -> Path:
    """Build the tiny model into model_dir unless a complete copy is already there.

    Written to a sibling temp dir and renamed, so a killed build never leaves a
    directory that looks complete.
    """
    model_dir = Path(model_dir or default_tiny_model_dir())
    if is_built(model_dir):
        return model_dir
    import tempfile

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    model_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=model_dir.name + ".", dir=model_dir.parent))
    torch.manual_seed(seed)
    config = LlamaConfig(**TINY_MODEL_SPEC, torch_dtype="float32")
    LlamaForCausalLM(config).save_pretrained(staging, safe_serialization=True)
    (staging / _MARKER).write_text(json.dumps({"version": TINY_MODEL_VERSION, "seed": seed}))
    try:
        staging.rename(model_dir)
    except OSError:
        # Another process finished first; theirs is as good as ours.
        import shutil

        shutil.rmtree(staging)
        if not is_built(model_dir):
            raise
    return model_dir
