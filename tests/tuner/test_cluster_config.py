"""The shipped cluster files pass Ray's own offline checks and the project's rules; broken copies fail
with one line that carries Ray's or jsonschema's message."""

import copy
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tuner.cluster_config import validate_cluster_file
from unlearn_core.errors import ConfigError

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster.yaml"
CLUSTER_LOCAL = ROOT / "cluster-local.yaml"


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _write(tmp_path: Path, config: dict, name: str = "cluster.yaml") -> Path:
    out = tmp_path / name
    out.write_text(yaml.safe_dump(config, sort_keys=False))
    return out


def _mutated(tmp_path: Path, change, source: Path = CLUSTER) -> Path:
    config = copy.deepcopy(_load(source))
    change(config)
    return _write(tmp_path, config)


@pytest.fixture
def no_network(monkeypatch):
    """Fail the test if validation tries to open any connection or resolve any name."""

    def refuse(*args, **kwargs):
        raise AssertionError("cluster validation tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.mark.parametrize("path", [CLUSTER, CLUSTER_LOCAL], ids=lambda p: p.name)
def test_shipped_cluster_files_validate_offline(path, no_network):
    prepared = validate_cluster_file(path)
    assert prepared["head_node_type"] in prepared["available_node_types"]
    assert "cluster_synced_files" in prepared  # Ray's provider defaults were merged in


def test_aws_gpu_workers_scale_and_head_takes_no_gpu_trials():
    prepared = validate_cluster_file(CLUSTER)
    types = prepared["available_node_types"]
    head = types[prepared["head_node_type"]]
    workers = [t for name, t in types.items() if name != prepared["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    gpus = [t["resources"]["GPU"] for t in workers]
    assert gpus and all(isinstance(g, int) and g >= 1 for g in gpus)
    assert all(t["min_workers"] == 0 and t["max_workers"] >= 1 for t in workers)
    assert prepared["provider"]["cache_stopped_nodes"] is False
    assert prepared["file_mounts"]["~/unlearn-search"] == "."
    assert any("pip install" in c and '-e "$HOME/unlearn-search[s3]"' in c for c in prepared["setup_commands"])
    assert any("nvidia-cuda-mps-control -d" in c for c in prepared["worker_start_ray_commands"])


@pytest.mark.parametrize("path", [CLUSTER, CLUSTER_LOCAL], ids=lambda p: p.name)
def test_head_starts_prometheus_after_ray_in_the_background(path):
    """`ray metrics launch-prometheus` reads the config of the Ray session `ray start --head` made; `ray up` must
    not wait for its download."""
    cmds = _load(path)["head_start_ray_commands"]
    launch = [i for i, cmd in enumerate(cmds) if "ray metrics launch-prometheus" in cmd]
    assert launch and launch[0] > _head_start({"head_start_ray_commands": cmds})
    assert re.search(r"nohup ray metrics launch-prometheus [^;]*&", cmds[launch[0]])


def test_local_provider_gets_ray_single_node_type():
    prepared = validate_cluster_file(CLUSTER_LOCAL)
    assert list(prepared["available_node_types"]) == ["local.cluster.node"]
    assert prepared["max_workers"] == len(_load(CLUSTER_LOCAL)["provider"]["worker_ips"])


def _rename_setup_commands(c):
    c["setup_comands"] = c.pop("setup_commands")


def _fractional_gpu(c):
    c["available_node_types"]["ray.worker.gpu"]["resources"]["GPU"] = 0.5


def _no_provider(c):
    del c["provider"]


def _head_start(c) -> int:
    """Index of the head's `ray start` command (Prometheus is started after it)."""
    return next(i for i, cmd in enumerate(c["head_start_ray_commands"]) if "ray start --head" in cmd)


def _dashboard_everywhere(c):
    c["head_start_ray_commands"][_head_start(c)] += " --dashboard-host=0.0.0.0"


def _auth_disabled(c):
    i = _head_start(c)
    c["head_start_ray_commands"][i] = c["head_start_ray_commands"][i].replace(
        "RAY_AUTH_MODE=token", "RAY_AUTH_MODE=disabled"
    )


def _auth_disabled_in_setup(c):
    c["setup_commands"].append("echo 'export RAY_AUTH_MODE=disabled' >> ~/.bashrc")


def _worker_without_token(c):
    cmds = c["worker_start_ray_commands"]
    cmds[-1] = cmds[-1].replace("RAY_AUTH_MODE=token ", "")


def _ray_default_head_commands(c):
    del c["head_start_ray_commands"]  # Ray's AWS default binds the dashboard to 0.0.0.0


@pytest.mark.parametrize(
    "change, expected",
    [
        (_rename_setup_commands, "Additional properties are not allowed ('setup_comands' was unexpected)"),
        (_fractional_gpu, "0.5 is not of type 'integer'"),
        (_no_provider, "'provider' is a required property"),
        (_dashboard_everywhere, "dashboard-host=0.0.0.0"),
        (_auth_disabled, "RAY_AUTH_MODE=disabled"),
        (_auth_disabled_in_setup, "RAY_AUTH_MODE=disabled"),
        (_worker_without_token, "without RAY_AUTH_MODE=token"),
        (_ray_default_head_commands, "Ray's aws default"),
    ],
    ids=lambda v: getattr(v, "__name__", "")[1:] or None,
)
def test_broken_copies_fail_with_one_line(tmp_path, change, expected):
    path = _mutated(tmp_path, change)
    with pytest.raises(ConfigError) as err:
        validate_cluster_file(path)
    message = str(err.value)
    assert expected in message
    assert message.startswith(str(path))
    assert "\n" not in message


def test_typo_suggests_the_key_and_fraction_points_at_the_node_type(tmp_path):
    with pytest.raises(ConfigError, match=r"did you mean 'setup_commands'"):
        validate_cluster_file(_mutated(tmp_path, _rename_setup_commands))
    with pytest.raises(ConfigError, match=r"at available_node_types/ray\.worker\.gpu/resources/GPU"):
        validate_cluster_file(_mutated(tmp_path, _fractional_gpu))


def test_ray_rejection_of_local_node_types_is_one_line(tmp_path):
    def add_node_types(c):
        c["available_node_types"] = {"gpu": {"resources": {"GPU": 1}, "node_config": {}}}
        c["head_node_type"] = "gpu"

    with pytest.raises(ConfigError, match="not supported for on-premise clusters") as err:
        validate_cluster_file(_mutated(tmp_path, add_node_types, source=CLUSTER_LOCAL))
    assert "\n" not in str(err.value)


def test_cli_prints_ok_for_good_files_and_one_line_for_a_bad_one(tmp_path):
    good = subprocess.run(
        [sys.executable, "-m", "tuner.cluster_config", str(CLUSTER), str(CLUSTER_LOCAL)],
        capture_output=True, text=True, cwd=ROOT,
    )
    assert good.returncode == 0, good.stderr
    assert good.stdout.splitlines() == [f"ok {CLUSTER}", f"ok {CLUSTER_LOCAL}"]

    bad = _mutated(tmp_path, _rename_setup_commands)
    out = subprocess.run(
        [sys.executable, "-m", "tuner.cluster_config", str(bad)],
        capture_output=True, text=True, cwd=ROOT,
    )
    assert out.returncode == 1
    lines = (out.stdout + out.stderr).splitlines()
    assert len(lines) == 1 and "setup_comands" in lines[0], lines
