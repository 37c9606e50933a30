"""``rayfleet check`` on the repository's own deploy files and broken copies.

Serve's schema classes are imported (pydantic only) but Ray is never started, and
the cluster file is checked against Ray's JSON schema without any cloud call.
"""

from __future__ import annotations

import copy
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from rayfleet.cli.check import check_file, file_kind
from rayfleet.cli.main import main
from rayfleet.deployments.serve_env import SERVE_ENV
from rayfleet.platform.config.signature import Signature, TensorSpec
from rayfleet.platform.config.store import MANIFEST, Manifest

ROOT = Path(__file__).resolve().parents[3]
CLUSTER = ROOT / "cluster.yaml"
RAYSERVICE = ROOT / "deploy" / "kuberay" / "rayservice.yaml"
SERVE_CONFIGS = [ROOT / "configs" / "demo.yaml", ROOT / "configs" / "gpu.yaml"]

Edit = Callable[[dict[str, Any]], None]


def load(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(path.read_text())
    return document


def broken_copy(tmp_path: Path, source: Path, edit: Edit) -> Path:
    """``source`` with ``edit`` applied, written under the same file name."""
    document = copy.deepcopy(load(source))
    edit(document)
    target = tmp_path / source.name
    target.write_text(yaml.safe_dump(document))
    return target


def only_problem(path: Path) -> str:
    result = check_file(str(path))
    assert not result.ok
    assert len(result.problems) == 1, result.problems
    return result.problems[0]


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        (CLUSTER, "cluster"),
        (RAYSERVICE, "rayservice"),
        *[(path, "serve") for path in SERVE_CONFIGS],
    ],
    ids=lambda value: value.name if isinstance(value, Path) else value,
)
def test_repository_files_pass(path: Path, kind: str) -> None:
    result = check_file(str(path))
    assert result.problems == ()
    assert result.kind == kind


def test_rayservice_embeds_the_gpu_config() -> None:
    embedded = yaml.safe_load(load(RAYSERVICE)["spec"]["serveConfigV2"])
    assert embedded == load(ROOT / "configs" / "gpu.yaml")


def test_gpu_config_shares_gpus_and_batches_big() -> None:
    args = load(ROOT / "configs" / "gpu.yaml")["applications"][0]["args"]
    assert args["store"].startswith("s3://")
    for version in args["models"][0]["versions"]:
        assert 0 < version["num_gpus"] < 1
        assert version["batching"]["max_batch_size"] == 64


def test_cluster_files_start_ray_with_rayfleets_serve_settings() -> None:
    cluster = load(CLUSTER)
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        (start,) = [command for command in cluster[key] if "ray start" in command]
        words = [w for w in shlex.split(start) if w.startswith("RAY_SERVE_")]
        assert dict(word.split("=", 1) for word in words) == SERVE_ENV
    ray_cluster = load(RAYSERVICE)["spec"]["rayClusterConfig"]
    groups = [ray_cluster["headGroupSpec"], *ray_cluster["workerGroupSpecs"]]
    for group in groups:
        (container,) = group["template"]["spec"]["containers"]
        env = {e["name"]: e["value"] for e in container["env"]}
        assert {k: v for k, v in env.items() if k.startswith("RAY_SERVE_")} == SERVE_ENV


def set_in(path: tuple[Any, ...], value: Any) -> Edit:
    def edit(document: dict[str, Any]) -> None:
        node: Any = document
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return edit


def gpu_types(document: dict[str, Any]) -> list[str]:
    return [name for name in document["available_node_types"] if name != "head"]


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            set_in(("max_workers",), "six"),
            "cluster.yaml: max_workers: 'six' is not of type 'integer'",
        ),
        (
            set_in(("max_worker",), 3),
            "cluster.yaml: (top level): Additional properties are not allowed "
            "('max_worker' was unexpected)",
        ),
        (
            set_in(("available_node_types", "gpu-g5-xlarge", "resources", "GPU"), 0.5),
            "cluster.yaml: available_node_types.gpu-g5-xlarge.resources.GPU: "
            "0.5 is not of type 'integer'",
        ),
        (
            set_in(("provider", "region"), 1),
            "cluster.yaml: provider.region: 1 is not of type 'string'",
        ),
        (
            set_in(("head_node_type",), "cpu-head"),
            "cluster.yaml: head_node_type: 'cpu-head' is not one of "
            "available_node_types",
        ),
        (
            set_in(("max_workers",), 0),
            "cluster.yaml: max_workers: 0 is less than the min_workers of all node "
            "types together (1)",
        ),
    ],
    ids=["type", "unknown-key", "fractional-gpu", "region", "head-type", "bounds"],
)
def test_broken_cluster_config(tmp_path: Path, edit: Edit, expected: str) -> None:
    problem = only_problem(broken_copy(tmp_path, CLUSTER, edit))
    assert problem.startswith("invalid ray up cluster config:\n")
    assert expected in problem


def rayfleet_app(document: dict[str, Any]) -> dict[str, Any]:
    app: dict[str, Any] = document["applications"][0]
    return app


def bad_batch(document: dict[str, Any]) -> None:
    versions = rayfleet_app(document)["args"]["models"][0]["versions"]
    versions[1]["batching"] = {"max_batch_size": 0}


def bad_replicas(document: dict[str, Any]) -> None:
    rayfleet_app(document)["deployments"] = [{"name": "Router", "num_replicas": -1}]


def misspelt_app_key(document: dict[str, Any]) -> None:
    rayfleet_app(document)["rout_prefix"] = "/models"


def bad_label_selector(document: dict[str, Any]) -> None:
    rayfleet_app(document)["args"]["router"]["label_selector"] = {"role": "head node"}


@pytest.mark.parametrize(
    ("edit", "header", "expected"),
    [
        (
            bad_batch,
            "invalid rayfleet spec:",
            "gpu.yaml: applications.0.args.models.0.versions.1.batching."
            "max_batch_size: Input should be greater than 0",
        ),
        (
            set_in(("http_options", "port"), "eight thousand"),
            "invalid Serve config:",
            "gpu.yaml: http_options.port: Input should be a valid integer",
        ),
        (
            bad_replicas,
            "invalid Serve config:",
            "gpu.yaml: applications.0.deployments.0.num_replicas: Input should be "
            "greater than 0",
        ),
        (
            set_in(("http_option",), {"port": 8001}),
            "keys Serve would ignore:",
            "gpu.yaml: http_option: unknown key",
        ),
        (
            misspelt_app_key,
            "keys Serve would ignore:",
            "gpu.yaml: applications.0.rout_prefix: unknown key",
        ),
        (
            bad_label_selector,
            "label selectors Ray would refuse:",
            "gpu.yaml: applications.0.args.router.label_selector: Invalid label",
        ),
    ],
    ids=[
        "spec",
        "serve-type",
        "serve-union",
        "unknown-top-key",
        "unknown-app-key",
        "label-selector",
    ],
)
def test_broken_serve_config(
    tmp_path: Path, edit: Edit, header: str, expected: str
) -> None:
    problem = only_problem(broken_copy(tmp_path, SERVE_CONFIGS[1], edit))
    assert problem.startswith(header + "\n")
    assert expected in problem
    # Pydantic's union member tags (e.g. 'constrained-int') stay out of paths.
    assert "constrained" not in problem


def test_other_applications_args_are_left_to_them(tmp_path: Path) -> None:
    def add_app(document: dict[str, Any]) -> None:
        document["applications"].append(
            {
                "name": "other",
                "route_prefix": "/other",
                "import_path": "other.module:app",
                "args": {"anything": ["goes"]},
            }
        )

    assert check_file(str(broken_copy(tmp_path, SERVE_CONFIGS[0], add_app))).ok


def test_rayservice_reports_paths_inside_the_embedded_config(tmp_path: Path) -> None:
    def break_embedded(document: dict[str, Any]) -> None:
        config = yaml.safe_load(document["spec"]["serveConfigV2"])
        bad_batch(config)
        document["spec"]["serveConfigV2"] = yaml.safe_dump(config)

    problem = only_problem(broken_copy(tmp_path, RAYSERVICE, break_embedded))
    assert (
        "rayservice.yaml: spec.serveConfigV2: applications.0.args.models.0.versions.1."
        "batching.max_batch_size: Input should be greater than 0"
    ) in problem


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("just: a mapping\n", "cannot tell what this file is"),
        ("applications: [\n", "cannot read"),
    ],
    ids=["unknown-kind", "not-yaml"],
)
def test_unreadable_files(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "x.yaml"
    path.write_text(text)
    assert expected in only_problem(path)


def test_file_kind() -> None:
    assert file_kind({"kind": "RayService", "spec": {}}) == "rayservice"
    assert file_kind({"applications": []}) == "serve"
    assert file_kind({"cluster_name": "x", "provider": {"type": "aws"}}) == "cluster"
    assert file_kind(["a", "list"]) is None


def local_store_config(tmp_path: Path, versions: list[str]) -> Path:
    """A Serve config for digits ``versions`` on a store holding only ``v1``."""
    folder = tmp_path / "store" / "digits" / "v1"
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(b"onnx")
    signature = Signature(
        inputs=(TensorSpec(name="input", datatype="FP32", shape=(-1, 64)),),
        outputs=(TensorSpec(name="label", datatype="INT64", shape=(-1,)),),
    )
    manifest = Manifest(runtime="onnx", artifact="model.onnx", signature=signature)
    (folder / MANIFEST).write_text(manifest.to_json())
    config = load(SERVE_CONFIGS[0])
    rayfleet_app(config)["args"] = {
        "store": str(tmp_path / "store"),
        "models": [{"name": "digits", "versions": [{"name": v} for v in versions]}],
    }
    path = tmp_path / "local.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_store_check_finds_missing_versions(tmp_path: Path) -> None:
    path = local_store_config(tmp_path, ["v1", "v2"])
    assert check_file(str(path)).ok
    result = check_file(str(path), store_check=True)
    (problem,) = result.problems
    assert f"not in the store {tmp_path}/store:" in problem
    assert (
        "local.yaml: applications.0.args.models.0.versions.1: model 'digits' has no "
        "version 'v2'"
    ) in problem
    assert "versions.0" not in problem


def test_store_check_passes_when_every_version_is_there(tmp_path: Path) -> None:
    assert check_file(str(local_store_config(tmp_path, ["v1"])), store_check=True).ok


def test_store_check_finds_a_version_too_big_for_its_pool(tmp_path: Path) -> None:
    path = local_store_config(tmp_path, ["v1"])
    config = yaml.safe_load(path.read_text())
    args = rayfleet_app(config)["args"]
    args["pools"] = [{"name": "small", "max_loaded_bytes": 3}]
    args["models"][0]["versions"] = [
        {"name": "v1", "placement": "pool", "pool": "small"}
    ]
    path.write_text(yaml.safe_dump(config))
    assert check_file(str(path)).ok
    (problem,) = check_file(str(path), store_check=True).problems
    # model.onnx is 4 bytes; the manifest does not count.
    assert problem == (
        "too big for their pools:\n  "
        f"{path}: applications.0.args.models.0.versions.0: digits/v1's files are "
        "4 bytes, over pool 'small''s max_loaded_bytes (3); raise the limit or "
        "place it in a replica"
    )


def test_cli_reports_the_path_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = broken_copy(tmp_path, SERVE_CONFIGS[1], bad_batch)
    assert main(["check", str(CLUSTER), str(bad)]) == 2
    captured = capsys.readouterr()
    assert captured.out == f"{CLUSTER}: ok (ray up cluster config)\n"
    assert captured.err.startswith("rayfleet: invalid rayfleet spec:\n")
    assert (
        f"{bad}: applications.0.args.models.0.versions.1.batching.max_batch_size: "
        "Input should be greater than 0"
    ) in captured.err


def test_cli_passes_good_files(capsys: pytest.CaptureFixture[str]) -> None:
    files = [str(path) for path in (CLUSTER, RAYSERVICE, *SERVE_CONFIGS)]
    assert main(["check", *files]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split(": ok")[0] for line in out] == files


def test_cli_store_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = local_store_config(tmp_path, ["v1", "v9"])
    assert main(["check", str(path)]) == 0
    assert main(["check", "--store-check", str(path)]) == 2
    assert "has no version 'v9'" in capsys.readouterr().err
