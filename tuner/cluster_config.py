"""Offline checks of a `ray up` cluster file (cluster.yaml, cluster-local.yaml).

`ray up` has no dry run, and it only reports a bad file after it has started talking to the cloud.
`validate_cluster_file` runs the checks that need neither credentials nor network, in this order:

1. Ray's own JSON schema (`ray/autoscaler/ray-schema.json` in the ray wheel) on the file as written,
   through `jsonschema`: unknown keys (`setup_comands`), a missing `provider`, a fractional `GPU` on a
   node type (resources must be integers), wrong types.
2. Ray's offline preparation and validation, `ray.autoscaler._private.util.prepare_config` then
   `validate_config` (an internal Ray API, checked against Ray 2.60). Offline, `prepare_config` only:
   merges the provider's `defaults.yaml` shipped in the wheel (a top-level key you leave out is taken
   from there), prepends `setup_commands` to `head_setup_commands` / `worker_setup_commands`, checks the
   docker block, fills per-node-type `min_workers` / `max_workers`, and for the `local` provider builds
   the single `local.cluster.node` type from `head_ip` / `worker_ips`. It makes no cloud or network
   call and imports no cloud SDK (boto3 is not even needed); that happens later, in `ray up`'s provider
   bootstrap (IAM roles, key pairs, subnets, AMI lookup), which this module does not run. So an
   instance type, AMI, IAM profile or quota that the cloud would refuse is not caught here.
   `validate_config` re-checks the schema on the merged config, requires `head_node_type` to be one of
   `available_node_types`, and the sum of `min_workers` to fit the global `max_workers`.
3. This project's rules, on the file as written and on anything inherited from Ray's defaults:
   - the dashboard is never bound to all interfaces (`--dashboard-host=0.0.0.0`, which Ray's AWS
     default head command does): users reach it with `ray dashboard FILE`;
   - token auth is never turned off (`RAY_AUTH_MODE` set to anything but `token`, e.g. `disabled`);
   - every `ray start` line runs with `RAY_AUTH_MODE=token`, because in Ray 2.60 `ray start` leaves
     auth off unless told (a worker never turns it on by itself).

Every failure raises `ConfigError` with one line: the file, where, and Ray's / jsonschema's message.

    $ python -m tuner.cluster_config cluster.yaml cluster-local.yaml
    ok cluster.yaml
    ok cluster-local.yaml
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import io
import json
import logging
import os
import re
import sys
from typing import Any, Iterator, Optional, Sequence

import yaml

from unlearn_core.errors import ConfigError

# `--dashboard-host=0.0.0.0`, `--dashboard-host 0.0.0.0`, `dashboard_host="0.0.0.0"`, and IPv6 "::".
_DASHBOARD_ALL_INTERFACES = re.compile(
    r"""dashboard[-_]host\s*(?:=|\s)\s*["']?(0\.0\.0\.0|::|\[::\])(?![\w.:])"""
)
_AUTH_MODE_SETTING = re.compile(r"""\bRAY_AUTH_MODE\s*=\s*["']?([^\s"';]*)""")
_RAY_START = re.compile(r"\bray\s+start\b")
_START_COMMAND_KEYS = ("head_start_ray_commands", "worker_start_ray_commands")


def validate_cluster_file(path: "str | os.PathLike[str]") -> dict:
    """Check a cluster file offline and return the config `ray up` would use (Ray's defaults merged in).

    Args:
        path: a YAML cluster file for `ray up` (any provider Ray ships defaults for).

    Raises:
        ConfigError: one line naming the file, the place in it, and what is wrong, carrying
            Ray's or jsonschema's own message.
    """
    name = os.fspath(path)
    try:
        with open(name, encoding="utf-8") as f:
            raw = yaml.safe_load(f)
    except OSError as e:
        raise ConfigError(f"{name}: cannot read the cluster file: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{name}: not valid YAML: {_one_line(e)}") from None
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{name}: expected a mapping of cluster settings (cluster_name, provider, ...), "
            f"got {type(raw).__name__}"
        )

    _check_schema(name, raw)
    _check_project_rules(name, raw, where_from=None)
    prepared = _prepare_with_ray(name, raw)
    # Keys left out of the file come from Ray's provider defaults (the AWS default head command binds
    # the dashboard to 0.0.0.0), so check what was inherited too.
    inherited = {k: v for k, v in prepared.items() if k not in raw}
    provider = raw.get("provider", {}).get("type", "?")
    _check_project_rules(name, inherited, where_from=f"Ray's {provider} default")
    return prepared


def _check_schema(name: str, config: dict) -> None:
    import jsonschema
    import ray.autoscaler

    schema_path = os.path.join(os.path.dirname(ray.autoscaler.__file__), "ray-schema.json")
    with open(schema_path, encoding="utf-8") as f:
        schema = json.load(f)
    try:
        jsonschema.validate(config, schema)
    except jsonschema.ValidationError as e:
        raise ConfigError(f"{name}: {_describe_schema_error(e)}") from None


def _describe_schema_error(e: Any) -> str:
    where = "/".join(str(p) for p in e.absolute_path)
    msg = _one_line(e.message)
    hint = ""
    if e.validator == "additionalProperties" and isinstance(e.instance, dict):
        known = list(e.schema.get("properties", {}))
        for key in e.instance:
            if key not in known:
                close = difflib.get_close_matches(str(key), known, n=1)
                if close:
                    hint = f" (did you mean '{close[0]}'?)"
                    break
    elif (
        len(e.absolute_path) >= 2
        and e.absolute_path[-2] == "resources"
        and e.absolute_path[-1] == "GPU"
    ):
        hint = (
            " (a node type declares whole GPUs; to share a GPU, give the trials fractional"
            " gpu resources instead)"
        )
    return f"{'at ' + where if where else 'at top level'}: {msg}{hint}"


def _prepare_with_ray(name: str, raw: dict) -> dict:
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    # prepare_config may print warnings (the local provider caps min/max_workers at the number of
    # IPs) and, on `cli_logger.abort`, an error line before raising: keep the result one line.
    sink = io.StringIO()
    quiet = logging.getLogger("ray.autoscaler")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            prepared = prepare_config(raw)
            validate_config(prepared)
    except jsonschema.ValidationError as e:
        raise ConfigError(f"{name}: after merging Ray's defaults, {_describe_schema_error(e)}") from None
    except Exception as e:  # noqa: BLE001 - Ray raises ValueError, RuntimeError, click errors, ...
        raise ConfigError(f"{name}: Ray rejected the config: {_exception_message(e)}") from None
    finally:
        quiet.setLevel(level)
    return prepared


def _check_project_rules(name: str, config: dict, where_from: Optional[str]) -> None:
    origin = f" ({where_from}, used because the file does not set it)" if where_from else ""
    for where, text in _strings(config):
        if _DASHBOARD_ALL_INTERFACES.search(text):
            raise ConfigError(
                f"{name}: {where}{origin} binds the Ray dashboard to all interfaces "
                f"({_DASHBOARD_ALL_INTERFACES.search(text).group(0)}); keep Ray's localhost default "
                f"and reach it with `ray dashboard {os.path.basename(name)}`"
            )
        for m in _AUTH_MODE_SETTING.finditer(text):
            if m.group(1).lower() != "token":
                raise ConfigError(
                    f"{name}: {where}{origin} sets RAY_AUTH_MODE={m.group(1)}, which turns token auth "
                    f"off; use RAY_AUTH_MODE=token"
                )
    for key, value in _items(config):
        if key[-1] == "RAY_AUTH_MODE" and str(value).lower() != "token":
            raise ConfigError(
                f"{name}: {'/'.join(key)}{origin} is {value!r}, which turns token auth off; use token"
            )
    for key in _START_COMMAND_KEYS:
        for i, cmd in enumerate(config.get(key) or []):
            if isinstance(cmd, str) and _RAY_START.search(cmd) and not _sets_token_auth(cmd):
                raise ConfigError(
                    f"{name}: {key}[{i}]{origin} runs `ray start` without RAY_AUTH_MODE=token, so that "
                    f"node starts with token auth off; write `RAY_AUTH_MODE=token ray start ...`"
                )


def _sets_token_auth(cmd: str) -> bool:
    return any(m.group(1).lower() == "token" for m in _AUTH_MODE_SETTING.finditer(cmd))


def _strings(obj: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """Every string value in `obj` with a readable location like `head_start_ray_commands[1]`."""
    if isinstance(obj, str):
        yield path or "top level", obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _strings(v, f"{path}/{k}" if path else str(k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _strings(v, f"{path}[{i}]")


def _items(obj: Any, path: tuple = ()) -> Iterator[tuple[tuple, Any]]:
    """Every (key path, value) pair of every mapping inside `obj`."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield path + (str(k),), v
            yield from _items(v, path + (str(k),))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _items(v, path + (f"[{i}]",))


def _exception_message(e: BaseException) -> str:
    msg = getattr(e, "message", None) or str(e)  # click.ClickException keeps it in .message
    if isinstance(e, KeyError):
        msg = f"missing key {msg}"
    return _one_line(f"{type(e).__name__}: {msg}")


def _one_line(text: Any) -> str:
    return " ".join(str(text).split())


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tuner.cluster_config",
        description="Check `ray up` cluster files offline: Ray's schema, Ray's config preparation, "
        "and this project's rules (dashboard on localhost, token auth on).",
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="cluster YAML file(s)")
    args = parser.parse_args(argv)
    failed = False
    for path in args.files:
        try:
            validate_cluster_file(path)
        except ConfigError as e:
            print(e, file=sys.stderr)
            failed = True
        else:
            print(f"ok {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
