"""How many simulated hosts the local cluster (no --address) can hold on this machine.

Each simulated host is a real raylet with its agents, plus the model processes the run
puts on it. Measured on the 2-core, 24 GiB CI kind while the whole test suite ran
(bench/RESULTS.md, "Local capacity"): raylet 48 MB, dashboard agent 138 MB, runtime-env
agent 89 MB at their peaks; a process holding the tiny model (the tool's actor, or a vLLM
worker of an engine across hosts) peaked at 1,135 MB. The head (GCS, dashboard and its
modules, monitors) and the driver take about HEAD_AND_DRIVER_BYTES. Cores are shared:
every stage of every host waits for them, and HOSTS_PER_CORE is the most the runs here
were measured to finish at (bench/scale.py).
Pure apart from this_machine().
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ray_tpu_profile.errors import ConfigError

GIB = 1 << 30
NODE_BYTES = 320 << 20
"""A simulated host's raylet, dashboard agent and runtime-env agent (275 MB at peak)."""
MODEL_PROCESS_BYTES = 1280 << 20
"""One process holding the tiny model under capture (1,135 MB at peak), with some room."""
HEAD_AND_DRIVER_BYTES = 2 * GIB
"""Head node processes (~1.4 GB measured) and this driver (~0.5-0.7 GB)."""
HOSTS_PER_CORE = 4


@dataclass(frozen=True)
class Machine:
    memory_available_bytes: int
    cores: int


def this_machine() -> Machine:
    """Memory available now (MemAvailable: free plus what the kernel can reclaim) and the
    cores this process may run on."""
    available = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
                    break
    except OSError:  # not Linux: the physical memory is the best bound there is
        pass
    if available is None:
        available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return Machine(available, cores)


def model_processes_per_host(chips_per_host: int, engine_devices: int) -> int:
    """An engine within one host runs in the tool's actor's own process; an engine across
    hosts adds one vLLM worker process per chip it uses on each host."""
    return 1 if engine_devices <= chips_per_host else 1 + chips_per_host


def simulated_host_limit(machine: Machine, processes_per_host: int = 1) -> tuple[int, str]:
    """(the most simulated hosts this machine holds, why)."""
    per_host = NODE_BYTES + processes_per_host * MODEL_PROCESS_BYTES
    by_memory = max(0, (machine.memory_available_bytes - HEAD_AND_DRIVER_BYTES) // per_host)
    by_cores = HOSTS_PER_CORE * machine.cores
    why = (
        f"{machine.memory_available_bytes / GIB:.1f} GiB available, less {HEAD_AND_DRIVER_BYTES / GIB:g} GiB for "
        f"the head and driver, at {per_host / GIB:.2f} GiB per simulated host with {processes_per_host} model "
        f"process(es); {machine.cores} core(s) at {HOSTS_PER_CORE} hosts per core"
    )
    return min(by_memory, by_cores), why


def check_simulated_hosts(hosts: int, machine: Machine, processes_per_host: int = 1) -> None:
    """ConfigError naming --hosts when the local simulated cluster cannot hold `hosts`."""
    limit, why = simulated_host_limit(machine, processes_per_host)
    if hosts > limit:
        raise ConfigError(
            "--hosts",
            hosts,
            f"this machine holds at most {limit} simulated host(s) ({why}); "
            "--address ADDR profiles the hosts of a real Ray cluster",
        )
