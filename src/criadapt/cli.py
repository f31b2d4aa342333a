"""The ``criadapt`` command: serve | backends | config default | version."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import pluggy

import criadapt
from criadapt.config import ConfigError, default_config_toml, load_config
from criadapt.errors import CriError
from criadapt.plugin import BackendNotFound, get_plugin_manager, installed_backends

log = logging.getLogger("criadapt")


class BackendLoadError(RuntimeError):
    """An installed backend failed to import or register."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="criadapt", description="A Kubernetes CRI runtime (CRI v1 and v1alpha2)."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="serve the CRI on a unix socket")
    serve.add_argument("--backend", help="backend entry-point name (config key: backend)")
    serve.add_argument("--listen", help="unix:///path/to.sock (config key: listen)")
    serve.add_argument("--config", help="TOML config file (default /etc/criadapt/criadapt.toml)")
    serve.add_argument("--root", help="persistent state folder (config key: root)")
    serve.add_argument("--state", help="runtime state folder (config key: state)")
    serve.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        help="log level (config key: log_level)",
    )

    sub.add_parser("backends", help="list installed backends (without importing them)")

    images = sub.add_parser("images", help="work on a backend's image store directly")
    images_sub = images.add_subparsers(dest="images_command", required=True, metavar="ACTION")
    image_import = images_sub.add_parser(
        "import", help="import an OCI image layout or docker save archive"
    )
    image_import.add_argument("archive", help="path of the .tar archive")
    images_list = images_sub.add_parser("list", help="list the images in the store")
    for parser_ in (image_import, images_list):
        parser_.add_argument("--backend", help="backend entry-point name (config key: backend)")
        parser_.add_argument("--config", help="TOML config file")
        parser_.add_argument("--root", help="persistent state folder (config key: root)")

    config = sub.add_parser("config", help="configuration helpers")
    config_sub = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    config_sub.add_parser("default", help="print the full default configuration")

    sub.add_parser("version", help="print criadapt's version")
    return parser


def _load_backend(name: str) -> pluggy.PluginManager:
    try:
        return get_plugin_manager(name)
    except BackendNotFound:
        raise
    except Exception as exc:  # a broken backend distribution: say so in one line
        log.debug("loading backend %s failed", name, exc_info=True)
        raise BackendLoadError(
            f"cannot load backend {name!r}: {type(exc).__name__}: {exc}"
        ) from exc


def _serve(args: argparse.Namespace) -> int:
    overrides = {
        "backend": args.backend,
        "listen": args.listen,
        "root": args.root,
        "state": args.state,
        "log_level": args.log_level,
    }
    config = load_config(args.config, overrides=overrides)
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    pm = _load_backend(config.backend)
    from criadapt.server import serve  # imported late: grpc start-up cost only for serve

    return serve(config, pm)


def _images(args: argparse.Namespace) -> int:
    config = load_config(args.config, overrides={"backend": args.backend, "root": args.root})
    pm = _load_backend(config.backend)
    if args.images_command == "import":
        archive = Path(args.archive)
        if not archive.is_file():
            raise ConfigError(f"{archive}: no such file")
        images = pm.hook.criadapt_import_images(config=config, archive=archive)
    else:
        images = pm.hook.criadapt_local_images(config=config)
    if images is None:
        print(f"criadapt: backend {config.backend!r} has no image store commands", file=sys.stderr)
        return 2
    print(f"{'IMAGE ID':<20} {'SIZE':>10}  NAMES")
    for image in images:
        names = ", ".join([*image.repo_tags, *image.repo_digests]) or "<none>"
        print(f"{image.id.removeprefix('sha256:')[:12]:<20} {image.size:>10}  {names}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "backends":
            for name, target in sorted(installed_backends().items()):
                print(f"{name}\t{target}")
            return 0
        if args.command == "images":
            return _images(args)
        if args.command == "config":
            sys.stdout.write(default_config_toml())
            return 0
        if args.command == "version":
            print(f"criadapt {criadapt.__version__}")
            return 0
    except (ConfigError, BackendNotFound, BackendLoadError, CriError) as exc:
        print(f"criadapt: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"criadapt: {exc}", file=sys.stderr)
        return 1
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
