"""engine_workers.process_group_file on real torch process groups (gloo, world size 1), each
in a fresh interpreter: a process group is process-wide state."""

import subprocess
import sys

from support.cli import LOOPBACK, free_port

MADE_AND_ASKED = """
import sys, torch.distributed as dist
from ray_tpu_profile.host.engine_workers import process_group_file
assert process_group_file(None) is None  # no process group yet
dist.init_process_group("gloo", init_method=sys.argv[1], world_size=1, rank=0)
print(process_group_file(None))
"""


def answer(init_method: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", MADE_AND_ASKED, init_method], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.strip().splitlines()[-1]


def test_a_file_rendezvous_names_the_file_the_store_holds(tmp_path):
    # The file tpu-inference's worker makes (mkstemp) and vLLM's (vllm_dist_<uuid>) alike.
    store = tmp_path / "made-by-the-worker"
    store.touch()
    assert answer(f"file://{store}") == str(store)


def test_a_tcp_rendezvous_has_no_file():
    assert answer(f"tcp://{LOOPBACK}:{free_port()}") == "None"
