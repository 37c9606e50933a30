"""``rayfleet models ls|push`` and ``rayfleet demo build``: what is in a model store,
and putting versions into one."""

from __future__ import annotations

import argparse

from rayfleet.cli.store_option import add_store_arguments, resolve_store
from rayfleet.platform.config.store import ModelStore

__all__ = ["register"]


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``models ls``, ``models push`` and ``demo build``."""
    models = commands.add_parser("models", help="the model store").add_subparsers(
        dest="models_command", required=True
    )
    ls = models.add_parser("ls", help="list models and versions")
    add_store_arguments(ls)
    ls.set_defaults(run=_ls)
    push = models.add_parser("push", help="copy a local version folder into the store")
    push.add_argument("folder", help="folder with manifest.json and the artifact")
    add_store_arguments(push)
    push.add_argument("--model", required=True)
    push.add_argument("--version", required=True)
    push.add_argument("--overwrite", action="store_true")
    push.set_defaults(run=_push)

    demo = commands.add_parser("demo", help="demo models").add_subparsers(
        dest="demo_command", required=True
    )
    build = demo.add_parser("build", help="train digits v1-v3 and push them")
    add_store_arguments(build)
    build.set_defaults(run=_demo_build)


def _ls(args: argparse.Namespace) -> int:
    store = ModelStore(resolve_store(args))
    models = store.models()
    if not models:
        print(f"no models in {store.uri}")
    for model in models:
        for version in store.versions(model):
            manifest = store.manifest(model, version)
            print(f"{model}\t{version}\t{manifest.runtime}\t{manifest.description}")
    return 0


def _push(args: argparse.Namespace) -> int:
    uri = ModelStore(resolve_store(args)).push(
        args.folder, args.model, args.version, overwrite=args.overwrite
    )
    print(f"pushed {args.model}/{args.version} to {uri}")
    return 0


def _demo_build(args: argparse.Namespace) -> int:
    store = resolve_store(args)
    # scikit-learn and onnx are needed only here.
    from rayfleet.cli.demo import build_demo_store

    for version in build_demo_store(store):
        print(
            f"digits/{version.name}: {version.description}, "
            f"held-out accuracy {version.accuracy:.3f}"
        )
    return 0
