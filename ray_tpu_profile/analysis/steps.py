"""What a torch trace says about vLLM's engine steps. Pure.

vLLM names each engine step by its work: `execute_context_<n>(<tokens>)_generation_<m>(<tokens>)`,
n requests in prefill (context) and m in decode (generation)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from ray_tpu_profile.core.files import open_trace

STEP = re.compile(r"^execute_context_(\d+)\((\d+)\)_generation_(\d+)\((\d+)\)$")


def count_steps(names) -> dict[str, int]:
    """{"prefill": steps with any prefill request, "decode": decode-only steps}."""
    counts = {"prefill": 0, "decode": 0}
    for name in names:
        match = STEP.match(name or "")
        if match:
            counts["prefill" if int(match.group(1)) > 0 else "decode"] += 1
    return counts


def _events(path: Path) -> list[dict]:
    with open_trace(path) as f:
        return json.load(f)["traceEvents"]


def torch_trace_steps(path: Path) -> dict[str, int]:
    return count_steps(e.get("name") for e in _events(path) if e.get("ph") == "X")


def torch_trace_pids(path: Path) -> set[int]:
    """The processes whose engine steps the trace holds (the model ran there)."""
    return {
        e["pid"]
        for e in _events(path)
        if e.get("ph") == "X" and STEP.match(e.get("name") or "") and isinstance(e.get("pid"), int)
    }


def check_phase(phase: str, counts: dict[str, int]) -> str | None:
    """None when the captured steps are all of `phase`, else why not."""
    if phase == "decode" and (counts["prefill"] or not counts["decode"]):
        return f"--phase decode captured {counts['prefill']} prefill and {counts['decode']} decode step(s)"
    if phase == "prefill" and (counts["decode"] or not counts["prefill"]):
        return f"--phase prefill captured {counts['prefill']} prefill and {counts['decode']} decode step(s)"
    return None
