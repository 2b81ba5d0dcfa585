"""Writes the JSON Schemas of manifest.json and report.json (ray_tpu_profile/rundir/schemas/)
from their types (rundir/manifest_types.py, analysis/report_types.py), with pydantic.

    .venv/bin/python scripts/schemas.py          # rewrite them
    .venv/bin/python scripts/schemas.py --check  # exit 1 if they are not what the types say

The unit tests run --check, so the published schemas never drift from the types."""

from __future__ import annotations

import json
import sys
from pathlib import Path

SCHEMAS = Path(__file__).resolve().parent.parent / "ray_tpu_profile" / "rundir" / "schemas"


def schemas() -> dict[str, dict]:
    from pydantic import TypeAdapter

    from ray_tpu_profile.analysis.report_types import Report
    from ray_tpu_profile.rundir.manifest_types import Manifest

    out = {}
    for name, kind, title in (("manifest", Manifest, "manifest.json"), ("report", Report, "report.json")):
        schema = TypeAdapter(kind).json_schema()
        out[f"{name}.schema.json"] = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"ray-tpu-profile/{name}.schema.json",
            **schema,
            "title": f"ray-tpu-profile {title}",
        }
    return out


def main(check: bool) -> int:
    stale = []
    for name, schema in schemas().items():
        text = json.dumps(schema, indent=2, sort_keys=True) + "\n"
        path = SCHEMAS / name
        if check:
            if not path.is_file() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print(f"stale: {', '.join(stale)}: run scripts/schemas.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main("--check" in sys.argv[1:]))
