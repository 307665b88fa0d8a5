"""``argbridge sign`` and ``argbridge verify``: debug inbound webhook signatures.

``sign`` prints the headers a sender of a scheme would add to a body (a file or stdin);
``verify`` checks a body against headers given with ``-H`` and says *why* it fails
(the daemon never tells a caller that). Both take the scheme and secrets either from
the command line (``--secret`` accepts ``env:NAME`` and ``file:PATH`` to keep secrets out
of the shell history) or from a configured source (``--config FILE --source NAME``).
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from typing import Any

import orjson

from argbridge.config.base import resolve_secret
from argbridge.signing import SCHEMES, Scheme, VerificationFailed, Verifier, signed_headers

EXIT_REJECTED = 1
EXIT_USAGE = 2


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("body", nargs="?", default="-", help="file with the raw body (- = stdin)")
    p.add_argument("--scheme", choices=SCHEMES, help="default: standard-webhooks")
    p.add_argument(
        "--secret",
        action="append",
        default=[],
        help="secret (repeat for rotation); env:NAME and file:PATH are resolved",
    )
    p.add_argument("--signature-header", help="hmac-sha256 header (X-Hub-Signature-256)")
    p.add_argument("--config", "-c", help="take scheme and secrets from this config file")
    p.add_argument("--source", help="webhook source name in --config")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("sign", help="print signature headers for a webhook body")
    _common(p)
    p.add_argument("--id", help="webhook-id (default: a random msg_ id)")
    p.add_argument("--timestamp", type=int, help="Unix seconds (default: now)")
    p.add_argument("--json", action="store_true", help="print the headers as JSON")
    p.set_defaults(func=cmd_sign)
    p = subparsers.add_parser("verify", help="check a webhook body against its headers")
    _common(p)
    p.add_argument(
        "--header",
        "-H",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="a received header (repeat)",
    )
    p.add_argument("--tolerance", type=float, help="timestamp tolerance in seconds (300)")
    p.add_argument("--now", type=float, help="verify as of this Unix time (default: now)")
    p.add_argument("--id-header", help="header carrying the delivery id")
    p.set_defaults(func=cmd_verify)


def _read_body(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    with open(path, "rb") as fh:
        return fh.read()


def _resolve(args: argparse.Namespace) -> tuple[Scheme, list[str], dict[str, Any]]:
    """(scheme, secrets, extra verifier options) from flags or from a configured source."""
    extra: dict[str, Any] = {}
    scheme: Scheme = args.scheme or "standard-webhooks"
    secrets: list[str] = []
    if args.config:
        from argbridge.cli import load_or_exit

        settings = load_or_exit(args.config)
        kinds = ("argus-webhook", "webhook")
        hooks = {n: c for n, c in settings.sources.items() if c.type in kinds}
        if args.source not in hooks:
            known = ", ".join(sorted(hooks)) or "none"
            raise SystemExit(f"--source must name a webhook source of {args.config} ({known})")
        cfg: Any = hooks[args.source]
        scheme = args.scheme or cfg.scheme
        secrets = [s.get_secret_value() for s in cfg.secrets]
        extra = {
            "signature_header": cfg.signature_header,
            "id_header": cfg.id_header,
            "tolerance": cfg.tolerance,
        }
    for given in args.secret:
        try:
            secrets.append(resolve_secret(given).get_secret_value())
        except ValueError as exc:
            raise SystemExit(f"--secret: {exc}") from None
    if not secrets:
        raise SystemExit("give --secret (or --config and --source)")
    if args.signature_header:
        extra["signature_header"] = args.signature_header
    return scheme, secrets, extra


def cmd_sign(args: argparse.Namespace) -> int:
    scheme, secrets, extra = _resolve(args)
    body = _read_body(args.body)
    now = float(args.timestamp) if args.timestamp is not None else time.time()
    try:
        headers = signed_headers(
            scheme,
            secrets,
            body,
            now=now,
            msg_id=args.id or f"msg_{uuid.uuid4().hex}",
            signature_header=extra.get("signature_header", "X-Hub-Signature-256"),
        )
    except ValueError as exc:
        print(f"cannot sign: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        print(orjson.dumps(headers, option=orjson.OPT_INDENT_2).decode())
    else:
        for name, value in headers.items():
            print(f"{name}: {value}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    scheme, secrets, extra = _resolve(args)
    if args.tolerance is not None:
        extra["tolerance"] = args.tolerance
    if args.id_header:
        extra["id_header"] = args.id_header
    headers: dict[str, str] = {}
    for line in args.header:
        name, sep, value = line.partition(":")
        if not sep:
            print(f"--header {line!r}: expected 'Name: value'", file=sys.stderr)
            return EXIT_USAGE
        headers[name.strip().lower()] = value.strip()
    body = _read_body(args.body)
    try:
        verifier = Verifier(scheme, secrets, **extra)
    except ValueError as exc:
        print(f"cannot verify: {exc}", file=sys.stderr)
        return EXIT_USAGE
    now = args.now if args.now is not None else time.time()
    try:
        result = verifier.verify(headers, body, now)
    except VerificationFailed as exc:
        print(f"REJECTED ({scheme}): {_EXPLAIN.get(exc.reason, exc.reason)}")
        return EXIT_REJECTED
    print(f"OK ({scheme}); delivery id: {result.delivery_id or '(none: body hash is used)'}")
    return 0


_EXPLAIN = {
    "missing_headers": "a signature, timestamp or id header is missing",
    "bad_timestamp": "the timestamp header is not integer Unix seconds",
    "stale_timestamp": "the timestamp is older than the tolerance",
    "future_timestamp": "the timestamp is further in the future than the tolerance",
    "non_utf8_body": "the body is not UTF-8",
    "mismatch": "no signature matches any secret (wrong secret, or the body was changed)",
}
