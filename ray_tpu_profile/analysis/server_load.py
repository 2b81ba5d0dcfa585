"""What a `vllm serve` was doing around an attach window, from its Prometheus /metrics:
requests running and waiting, prompt and generation tokens per second before, during and
after the window. Pure apart from fetch() and LoadSampler.
"""

from __future__ import annotations

import math
import re
import threading
import time
from dataclasses import dataclass
from typing import Any

RUNNING = "vllm:num_requests_running"
WAITING = "vllm:num_requests_waiting"
PROMPT_TOKENS = "vllm:prompt_tokens_total"
GENERATION_TOKENS = "vllm:generation_tokens_total"
REQUESTS_DONE = "vllm:request_success_total"
GAUGES = (RUNNING, WAITING)
COUNTERS = (PROMPT_TOKENS, GENERATION_TOKENS, REQUESTS_DONE)

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


MAX_METRICS_BYTES = 16 << 20
"""A /metrics page is read up to this much: a server that sends more is not vLLM's."""


def parse_metrics(text: str) -> dict[str, float]:
    """Each named metric summed over its label sets (a deployment's engines, finish reasons).
    Only finite numbers: a NaN or Inf sample (Prometheus allows them) is left out, as it
    would make the manifest invalid JSON and every rate from it meaningless."""
    totals: dict[str, float] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match and match.group(1) in GAUGES + COUNTERS:
            try:
                value = float(match.group(3))
            except ValueError:
                continue  # not a number: not a sample this report can use
            if math.isfinite(value):
                totals[match.group(1)] = totals.get(match.group(1), 0.0) + value
    return totals


@dataclass(frozen=True)
class MetricsSample:
    at_s: float
    """Epoch seconds, on this machine's clock."""
    values: dict[str, float]


def load_context(samples: list[MetricsSample]) -> dict[str, Any]:
    """samples: before the window, at its start, at its end, after it (the same length as
    before). Per interval ("before", "during", "after"): tokens and finished requests per
    second; at each sample: requests running and waiting."""
    names = ("before", "during", "after")
    intervals = {}
    for name, (a, b) in zip(names, zip(samples, samples[1:])):
        seconds = b.at_s - a.at_s
        intervals[name] = {
            "seconds": round(seconds, 3),
            **{
                f"{key.removeprefix('vllm:').removesuffix('_total')}_per_s": round(
                    (b.values[key] - a.values[key]) / seconds, 3
                )
                if seconds > 0 and key in a.values and key in b.values
                else None
                for key in COUNTERS
            },
        }
    points = ("before", "window_start", "window_end", "after")
    return {
        "intervals": intervals,
        "requests": {
            point: {"running": s.values.get(RUNNING), "waiting": s.values.get(WAITING)}
            for point, s in zip(points, samples)
        },
    }


def describe(context: dict[str, Any]) -> str:
    """One line for the report."""
    during = context["intervals"].get("during", {})
    start = context["requests"].get("window_start", {})
    parts = [
        f"{name}: {i['prompt_tokens_per_s']} prompt + {i['generation_tokens_per_s']} generation tokens/s"
        for name, i in context["intervals"].items()
    ]
    return (
        f"server load: {start.get('running')} running, {start.get('waiting')} waiting at the window's start; "
        + "; ".join(parts)
        + (f" (during: {during.get('request_success_per_s')} requests/s done)" if during else "")
    )


def fetch(url: str, timeout_s: float = 5.0) -> dict[str, float]:
    import urllib.request

    with urllib.request.urlopen(f"{url.rstrip('/')}/metrics", timeout=timeout_s) as response:
        body = response.read(MAX_METRICS_BYTES + 1)
    if len(body) > MAX_METRICS_BYTES:
        raise ValueError(f"{url}/metrics is larger than {MAX_METRICS_BYTES >> 20} MiB: not a vLLM server's")
    return parse_metrics(body.decode(errors="replace"))


class LoadSampler:
    """Samples /metrics at the given epoch instants, in a thread (the capture goes on)."""

    def __init__(self, url: str, instants_s: list[float]):
        self.url = url
        self.instants_s = instants_s
        self.samples: list[MetricsSample] = []
        self.error: str | None = None
        self._thread = threading.Thread(target=self._run, name="load-metrics", daemon=True)

    def start(self) -> LoadSampler:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            for at_s in self.instants_s:
                threading.Event().wait(max(0.0, at_s - time.time()))  # until the instant
                self.samples.append(MetricsSample(time.time(), fetch(self.url)))
        except Exception as e:  # said in the manifest and report; the capture stands without it
            self.error = f"{type(e).__name__}: {e}"

    def result(self, timeout_s: float) -> dict[str, Any]:
        self._thread.join(timeout=timeout_s)
        if self.error or len(self.samples) < len(self.instants_s):
            return {"url": self.url, "error": self.error or f"/metrics not read within {timeout_s:g} s"}
        return {"url": self.url, **load_context(self.samples)}
