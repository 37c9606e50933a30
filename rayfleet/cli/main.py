"""The ``rayfleet`` command.

::

    rayfleet up CONFIG [--smoke]             start local Ray, serve CONFIG, block
    rayfleet models ls --store URI           list models and versions
    rayfleet models push DIR --store URI --model M --version V [--overwrite]
    rayfleet demo build --store URI          train and push the digits demo models
    rayfleet check FILE... [--store-check]   check Serve, ray up and KubeRay files
    rayfleet rollout status|promote|rollback|pause|resume|weights [--model M]
                                             steer rollouts through the admin API
    rayfleet validate --store URI --model M --candidate V --baseline B [--data F]
                                             judge a version offline; exit 1 on fail
    rayfleet batch INPUT OUTPUT --store URI --model M --version V [--compare V2]
                                             score Parquet on Ray Data; exit 1 when
                                             too many rows are bad

Ray is imported only by the commands that need it (``up``, ``batch``, and ``check``
for Serve configs), so store commands stay quick.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from rayfleet.cli.check import check_file
from rayfleet.platform.config.spec import VersionSpec, parse_spec
from rayfleet.platform.config.store import ModelStore
from rayfleet.platform.errors import ConfigError
from rayfleet.platform.scoring import DEFAULT_BATCH_SIZE

__all__ = ["main"]


def _models_ls(args: argparse.Namespace) -> int:
    store = ModelStore(args.store)
    models = store.models()
    if not models:
        print(f"no models in {store.uri}")
    for model in models:
        for version in store.versions(model):
            manifest = store.manifest(model, version)
            print(f"{model}\t{version}\t{manifest.runtime}\t{manifest.description}")
    return 0


def _models_push(args: argparse.Namespace) -> int:
    uri = ModelStore(args.store).push(
        args.folder, args.model, args.version, overwrite=args.overwrite
    )
    print(f"pushed {args.model}/{args.version} to {uri}")
    return 0


def _demo_build(args: argparse.Namespace) -> int:
    from rayfleet.cli.demo import build_demo_store

    for version in build_demo_store(args.store):
        print(
            f"digits/{version.name}: {version.description}, "
            f"held-out accuracy {version.accuracy:.3f}"
        )
    return 0


def load_serve_config(path: str) -> dict[str, Any]:
    """Read a Serve config file and check the rayfleet spec of each application."""
    try:
        config = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"{path}: cannot read: {error}") from error
    if not isinstance(config, dict) or not config.get("applications"):
        raise ConfigError(f"{path}: expected a Serve config with 'applications'")
    for index, app in enumerate(config["applications"]):
        parse_spec(app.get("args") or {}, source=f"{path}: applications.{index}.args")
    return config


def _check(args: argparse.Namespace) -> int:
    failed = False
    for path in args.files:
        result = check_file(path, store_check=args.store_check)
        if result.ok:
            print(result.summary())
        for problem in result.problems:
            print(f"rayfleet: {problem}", file=sys.stderr)
        failed = failed or not result.ok
    return 2 if failed else 0


def _up(args: argparse.Namespace) -> int:
    from rayfleet.cli.up import serve_config_locally

    config = load_serve_config(args.config)
    serve_config_locally(config, smoke=args.smoke)
    return 0


def _rollout(args: argparse.Namespace) -> int:
    from rayfleet.cli.admin_client import rollout_request

    action = None if args.action == "status" else args.action
    if action is not None and args.model is None:
        raise ConfigError(f"rollout {action} needs --model")
    status, body = rollout_request(args.url, args.model, action, weight=args.weight)
    if action is None and args.model is not None and status == 200:
        body = body.get(args.model, {"error": f"no model {args.model!r}"})
    print(json.dumps(body, indent=2))
    return 0 if status < 400 else 1


def _progress(done: int, total: int) -> None:
    width = 30
    filled = int(width * done / total) if total else width
    bar = "#" * filled + "." * (width - filled)
    print(f"\r  [{bar}] {done}/{total} rows", end="", file=sys.stderr, flush=True)
    if done >= total:
        print(file=sys.stderr)


def _validate(args: argparse.Namespace) -> int:
    from rayfleet.platform.validation.predeploy import validate_versions

    report = validate_versions(
        ModelStore(args.store),
        args.model,
        args.candidate,
        args.baseline,
        data=args.data,
        batch_size=args.batch_size,
        progress=None if args.quiet else _progress,
    )
    if args.json:
        Path(args.json).write_text(json.dumps(report.to_dict(), indent=2))
    if args.html:
        Path(args.html).write_text(report.to_html())
    for check in report.gates:
        print(f"  {check.describe()}")
    verdict = "PASSED" if report.passed else "FAILED: " + "; ".join(report.failures)
    print(f"{args.model}/{args.candidate} vs {args.baseline}: {verdict}")
    return 0 if report.passed else 1


def _names(values: Sequence[str] | None) -> list[str] | None:
    """Column names given as separate words or comma-separated."""
    if values is None:
        return None
    return [name for value in values for name in value.split(",") if name]


def _batch(args: argparse.Namespace) -> int:
    import ray

    from rayfleet.deployments.scoring_job import score

    # Called as a function (tests, notebooks), the caller's Ray may be running.
    ray.init(address=args.address, ignore_reinit_error=True)
    if args.quiet:
        ray.data.DataContext.get_current().enable_progress_bars = False
    summary = score(
        args.store,
        args.model,
        args.version,
        args.input,
        args.output,
        compare=args.compare,
        batch_size=args.batch_size,
        concurrency=args.concurrency,
        spec=VersionSpec(
            name=args.version, num_cpus=args.num_cpus, num_gpus=args.num_gpus
        ),
        input_columns=_names(args.input_columns),
        passthrough=_names(args.passthrough) or (),
        label_column=args.labels,
        max_error_share=args.max_error_share,
        errors_uri=args.errors,
        overwrite=args.overwrite,
    )
    print(summary.describe())
    return 0 if summary.passed else 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rayfleet", description=__doc__.split("\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser(
        "up", help="start local Ray and serve a config; Ctrl-C stops"
    )
    up.add_argument("config", help="a Serve config file, e.g. configs/demo.yaml")
    up.add_argument(
        "--smoke", action="store_true", help="send a few tritonclient requests once up"
    )
    up.set_defaults(run=_up)

    models = commands.add_parser("models", help="the model store").add_subparsers(
        dest="models_command", required=True
    )
    ls = models.add_parser("ls", help="list models and versions")
    ls.add_argument("--store", required=True, help="store URI: path, s3://...")
    ls.set_defaults(run=_models_ls)
    push = models.add_parser("push", help="copy a local version folder into the store")
    push.add_argument("folder", help="folder with manifest.json and the artifact")
    push.add_argument("--store", required=True)
    push.add_argument("--model", required=True)
    push.add_argument("--version", required=True)
    push.add_argument("--overwrite", action="store_true")
    push.set_defaults(run=_models_push)

    demo = commands.add_parser("demo", help="demo models").add_subparsers(
        dest="demo_command", required=True
    )
    build = demo.add_parser("build", help="train digits v1-v3 and push them")
    build.add_argument("--store", required=True)
    build.set_defaults(run=_demo_build)

    check = commands.add_parser(
        "check", help="check Serve configs, ray up cluster files, RayService manifests"
    )
    check.add_argument("files", nargs="+", metavar="FILE", help="YAML file to check")
    check.add_argument(
        "--store-check",
        action="store_true",
        help="also read every served version's manifest from its store",
    )
    check.set_defaults(run=_check)

    validate = commands.add_parser(
        "validate", help="run a candidate and its baseline on a dataset and judge"
    )
    validate.add_argument("--store", required=True)
    validate.add_argument("--model", required=True)
    validate.add_argument("--candidate", required=True)
    validate.add_argument("--baseline", required=True)
    validate.add_argument(
        "--data", help="Parquet dataset (default: the candidate's reference data)"
    )
    validate.add_argument("--batch-size", type=int, default=64)
    validate.add_argument("--json", help="write the report as JSON here")
    validate.add_argument("--html", help="write the report as an HTML page here")
    validate.add_argument("--quiet", action="store_true", help="no progress bar")
    validate.set_defaults(run=_validate)

    rollout = commands.add_parser(
        "rollout", help="see or steer rollouts (token from $RAYFLEET_ADMIN_TOKEN)"
    )
    rollout.add_argument(
        "action",
        choices=["status", "promote", "rollback", "pause", "resume", "weights"],
    )
    rollout.add_argument("--model", help="the model (every model for status)")
    rollout.add_argument("--weight", type=float, help="canary percent, for weights")
    rollout.add_argument("--url", default="http://127.0.0.1:8000")
    rollout.set_defaults(run=_rollout)

    batch = commands.add_parser(
        "batch",
        help="score Parquet files with a version on Ray Data",
        description="Score INPUT (Parquet file or folder, any pyarrow URI) into the "
        "Parquet folder OUTPUT, which appears only when the job succeeds. Put INPUT "
        "and OUTPUT before options that take several values.",
    )
    batch.add_argument("input", help="Parquet file or folder: a path, s3://, gs://")
    batch.add_argument("output", help="Parquet folder to create: a path, s3://, gs://")
    batch.add_argument("--store", required=True)
    batch.add_argument("--model", required=True)
    batch.add_argument("--version", required=True)
    batch.add_argument(
        "--compare", metavar="V2", help="also score V2: agreement, drift, report"
    )
    batch.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    batch.add_argument(
        "--concurrency", type=int, help="actors (default: as many as the cluster fits)"
    )
    batch.add_argument("--num-cpus", type=float, default=1.0, help="CPUs per actor")
    batch.add_argument("--num-gpus", type=float, default=0.0, help="GPUs per actor")
    batch.add_argument(
        "--input-columns",
        nargs="+",
        metavar="COL",
        help="columns or patterns ('pixel_*') stacked in order into the input "
        "(default: a list column named like the input, else every feature column)",
    )
    batch.add_argument(
        "--passthrough", nargs="+", metavar="COL", help="columns copied to the output"
    )
    batch.add_argument(
        "--labels", default="target", help="label column for --compare's accuracy"
    )
    batch.add_argument(
        "--max-error-share",
        type=float,
        default=0.01,
        help="fail (exit 1, no OUTPUT) when more rows than this share are bad",
    )
    batch.add_argument(
        "--errors", help="bad rows, .jsonl or .parquet (default OUTPUT.errors.jsonl)"
    )
    batch.add_argument("--overwrite", action="store_true")
    batch.add_argument("--address", help="Ray cluster (default: RAY_ADDRESS or local)")
    batch.add_argument("--quiet", action="store_true", help="no progress bars")
    batch.set_defaults(run=_batch)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rayfleet`` console script."""
    args = _parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except ConfigError as error:
        print(f"rayfleet: {error}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
