"""Every cluster config and every command in cluster/README.md parses with the CLI's own
parser (`plan`, which takes run's flags), so the configs cannot rot."""

from __future__ import annotations

import re
import shlex

import pytest
import yaml

from ray_tpu_profile.cli import config_from, plan
from ray_tpu_profile.host.engine import check_engine_args, engine_argv, parse_engine_args
from support.cli import REPO

CLUSTER = REPO / "cluster"


def check_command(command: str):
    """Parse a `ray-tpu-profile run|plan ...` command like the CLI does; returns the config
    and the parsed vLLM engine args. Raises on any flag the CLI or vLLM would refuse."""
    tokens = shlex.split(command)
    args = tokens[tokens.index("ray-tpu-profile") + 1 :]
    assert args[0] in ("run", "plan"), command
    ctx = plan.make_context("plan", args[1:])
    config = config_from(ctx.params, ctx)
    engine_args = parse_engine_args(engine_argv(config.model or "tiny", config.engine_argv, config.model is None))
    check_engine_args(engine_args, config.workload)
    return config, engine_args


def readme_commands() -> list[str]:
    text = (CLUSTER / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    return [line.split("#")[0].strip() for b in blocks for line in b.splitlines() if "ray-tpu-profile " in line]


def rayjobs():
    for path in sorted(CLUSTER.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc.get("kind") == "RayJob":
                yield path.name, doc


def test_every_config_is_valid_yaml_of_a_known_kind():
    kinds = {}
    for path in sorted(CLUSTER.glob("*.yaml")):
        (doc,) = list(yaml.safe_load_all(path.read_text()))
        kinds[path.name] = doc.get("kind") or ("ray up" if "cluster_name" in doc else None)
    assert kinds == {
        "ray-up-tpu-v6e-16.yaml": "ray up",
        "raycluster-v6e-16.yaml": "RayCluster",
        "rayjob-v6e-16.yaml": "RayJob",
        "rayjob-v6e-16-70b-decode.yaml": "RayJob",
        "rayjob-v6e-8-decode.yaml": "RayJob",
    }


@pytest.mark.parametrize("name,job", list(rayjobs()))
def test_rayjob_entrypoints_parse_and_fit_their_hosts(name, job):
    config, engine_args = check_command(job["spec"]["entrypoint"])
    engines = engines_on_its_cluster(job, config, engine_args)
    assert engines, name


def engines_on_its_cluster(job, config, engine_args):
    """The engines the job's entrypoint makes on the hosts of its cluster (ConfigError if
    its TP x PP cannot be placed there)."""
    from ray_tpu_profile.core.hosts import Host
    from ray_tpu_profile.placement.engines import plan_engines

    if "rayClusterSpec" in job["spec"]:
        (group,) = job["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    else:  # runs on raycluster-v6e-16.yaml
        (cluster_doc,) = yaml.safe_load_all((CLUSTER / "raycluster-v6e-16.yaml").read_text())
        assert job["spec"]["clusterSelector"]["ray.io/cluster"] == cluster_doc["metadata"]["name"]
        (group,) = cluster_doc["spec"]["workerGroupSpecs"]
    chips = int(group["template"]["spec"]["containers"][0]["resources"]["limits"]["google.com/tpu"])
    hosts = [
        Host(name=f"w{i}", node_id=str(i), node_ip="", chips=chips, slice_name="s", worker_id=i)
        for i in range(int(group.get("numOfHosts", 1)))
    ][: config.placement.hosts]
    return plan_engines(hosts, engine_args.tensor_parallel_size, engine_args.pipeline_parallel_size)


def test_the_70b_decode_job_runs_two_engines_of_two_hosts_each():
    (job,) = [j for n, j in rayjobs() if n == "rayjob-v6e-16-70b-decode.yaml"]
    config, engine_args = check_command(job["spec"]["entrypoint"])
    engines = engines_on_its_cluster(job, config, engine_args)
    assert engine_args.tensor_parallel_size == 8 and config.capture.phase == "decode"
    assert [[h.name for h in e.hosts] for e in engines] == [["w0", "w1"], ["w2", "w3"]]


def test_seed_decode_example_is_the_single_host_job():
    (job,) = [j for n, j in rayjobs() if n == "rayjob-v6e-8-decode.yaml"]
    config, engine_args = check_command(job["spec"]["entrypoint"])
    w = config.workload
    assert (w.input_len, w.output_len, w.batch_size, engine_args.tensor_parallel_size) == (1, 128, 32, 8)
    assert (config.capture.delay_ms, config.capture.duration_ms) == (1000, 2000)


def test_readme_commands_parse():
    commands = readme_commands()
    assert len(commands) >= 2
    for command in commands:
        check_command(command)


def test_a_broken_entrypoint_would_be_caught():
    from ray_tpu_profile.errors import ConfigError

    with pytest.raises(ConfigError):
        check_command("ray-tpu-profile run --batch-size 0")
    with pytest.raises(ConfigError):
        check_command("ray-tpu-profile run -- --no-such-engine-flag")
