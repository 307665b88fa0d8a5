"""The ``argbridge`` command line.

Core commands live here (``run``, ``check-config``, ``version``); other command groups
(control API clients, dead letters, demo…) are modules in :mod:`argbridge.commands`,
each with ``register(subparsers)``, listed in :data:`COMMAND_MODULES`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path

from argbridge import __version__
from argbridge.config import load_settings
from argbridge.config.settings import Settings
from argbridge.errors import ConfigError, StartupError
from argbridge.statelock import StateDirLocked

#: Extra command modules, each exposing ``register(subparsers) -> None``.
COMMAND_MODULES: list[str] = [
    "argbridge.commands.ops",
    "argbridge.commands.signing",
    "argbridge.commands.arga",
    "argbridge.commands.dlq",
    "argbridge.commands.journal",
    "argbridge.commands.demo",
    "argbridge.commands.trace",
]

EXIT_CONFIG = 2
#: A listener cannot bind or the state dir cannot be written (nothing was started).
EXIT_STARTUP = 1
#: Another daemon holds the state dir.
EXIT_LOCKED = 3


def _print_config_errors(path: str | None, exc: ConfigError) -> None:
    where = path or "configuration"
    print(f"{where}: {len(exc.problems)} error(s)", file=sys.stderr)
    for key, msg in exc.problems:
        print(f"  {key}: {msg}" if key else f"  {msg}", file=sys.stderr)


def load_or_exit(path: str | None) -> Settings:
    """Load settings or print every error with its key path and exit 2."""
    try:
        return load_settings(Path(path) if path else None)
    except ConfigError as exc:
        _print_config_errors(path, exc)
        raise SystemExit(EXIT_CONFIG) from None


def cmd_run(args: argparse.Namespace) -> int:
    import anyio

    from argbridge import notify
    from argbridge.logging import configure_logging
    from argbridge.runtime import App

    settings = load_or_exit(args.config)
    configure_logging(settings.log.level, settings.log.format)
    app = App(settings, config_path=args.config)  # SIGHUP re-reads it
    notify.install(app)  # READY/STATUS/WATCHDOG/STOPPING when run by systemd (Type=notify)
    use_uvloop = settings.runtime.uvloop
    if use_uvloop:
        try:
            import uvloop  # noqa: F401
        except ImportError:
            use_uvloop = False
    try:
        anyio.run(app.run, backend="asyncio", backend_options={"use_uvloop": use_uvloop})
    except ConfigError as exc:
        _print_config_errors(args.config, exc)
        return EXIT_CONFIG
    except StateDirLocked as exc:
        print(f"argbridge run: {exc}", file=sys.stderr)
        return EXIT_LOCKED
    except StartupError as exc:
        # One line, before READY=1 and before any source or sink started.
        print(f"argbridge: {exc}", file=sys.stderr)
        return EXIT_STARTUP
    except KeyboardInterrupt:
        return 130
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    from argbridge.config.base import unresolved_secrets
    from argbridge.config.endpoints import endpoints

    try:
        if args.no_environment:
            with unresolved_secrets():
                settings = load_settings(Path(args.config))
        else:
            settings = load_settings(Path(args.config))
    except ConfigError as exc:
        _print_config_errors(args.config, exc)
        return 1
    print(
        f"{args.config}: OK ({len(settings.sources)} source(s): "
        f"{', '.join(f'{n} [{c.type}]' for n, c in settings.sources.items()) or '-'}; "
        f"{len(settings.sinks)} sink(s): "
        f"{', '.join(f'{n} [{c.type}]' for n, c in settings.sinks.items()) or '-'}; "
        f"{len(settings.routes)} route(s); state in {settings.state_dir})"
    )
    if args.no_environment:
        print("secret references (env:, file:, credential:) were not resolved")
    opened = endpoints(settings)
    print("endpoints:" if opened else "endpoints: none (http.enabled = false)")
    for line in opened:
        print(f"  {line}")
    return 0


def cmd_version(args: argparse.Namespace) -> int:
    print(f"argbridge {__version__}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="argbridge",
        description="Bridge Arga streams and Argus webhooks to Kafka, Slack and webhooks.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("run", help="run the daemon")
    p.add_argument("--config", "-c", required=True, help="TOML configuration file")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("check-config", help="validate a configuration file")
    p.add_argument("config", help="TOML configuration file")
    p.add_argument(
        "--no-environment",
        action="store_true",
        help="check everything except that secret references (env:, file:, credential:) "
        "resolve, e.g. in CI where the secrets are absent",
    )
    p.set_defaults(func=cmd_check_config)
    p = sub.add_parser("version", help="print the version")
    p.set_defaults(func=cmd_version)
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
