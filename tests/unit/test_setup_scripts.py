"""The set-up scripts' own checks, which need no install to run."""

from __future__ import annotations

import shutil
import subprocess

from support.cli import REPO


def test_the_tpu_stack_set_up_fails_at_once_naming_what_it_needs_without_python_3_12(tmp_path):
    """No Python 3.12 on PATH, in pyenv or in RTP_PYTHON312: one line on stderr, exit 1,
    and no venv begun."""
    venv, tools = tmp_path / "venv", tmp_path / "bin"
    tools.mkdir()
    for tool in ("cat", "cut", "dirname", "sha256sum"):  # what the script runs before it looks
        (tools / tool).symlink_to(shutil.which(tool))
    proc = subprocess.run(
        [shutil.which("bash"), str(REPO / "scripts" / "setup-tpu-inference.sh")],
        env={"PATH": str(tools), "HOME": str(tmp_path), "RTP_TPU_INFERENCE_VENV": str(venv)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "setup-tpu-inference: no Python 3.12 found (tried RTP_PYTHON312, python3.12 on PATH, "
        "~/.pyenv/versions/3.12*): jax 0.11 needs it"
    ]
    assert not venv.exists()
