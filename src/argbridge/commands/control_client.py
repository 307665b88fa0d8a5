"""How the command line finds a running daemon's control API (:func:`resolve`).

The control API lives on its own listener (:mod:`argbridge.http.server`): a Unix socket
in the state dir (mode 0600: run the CLI as the daemon's user or root) and, optionally,
a TCP address. In order:

1. ``--url http://HOST:PORT``: the TCP control listener (``control.host``/``control.port``);
   the token comes from ``--token``, else ``$ARGBRIDGE_CONTROL_TOKEN``, else the
   ``control.token`` of ``--config`` when given too. ``--url unix:/PATH`` is a socket.
2. ``--socket PATH``: that control socket.
3. ``--config FILE``: the control socket of that config (``state_dir`` + ``control.socket``).
4. ``--state-dir DIR``, else ``$ARGBRIDGE_STATE_DIR``, else ``./var`` (the default
   ``state_dir``): ``DIR/control.sock``.

Only ``state_dir`` and ``[control]`` of a config are read (plus their ``ARGBRIDGE_``
environment overrides), never validated as a whole, so the daemon's other secrets (often
``credential:`` references that only exist inside the systemd unit) are not needed.
``--token`` accepts ``env:NAME``, ``file:PATH`` and ``credential:NAME`` so the token stays
out of ``ps``. The socket needs no token.
"""

from __future__ import annotations

import argparse
import os
import socket
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from argbridge.config.settings import ControlConfig

#: Where systemd puts a unit's credentials (readable by root) when you run the CLI from a
#: shell rather than inside the unit.
SYSTEMD_CREDENTIALS = "/run/credentials/argbridge.service"
#: ``base_url`` of requests sent over the Unix socket (the host part is not used).
SOCKET_BASE = "http://argbridge"
DEFAULT_STATE_DIR = "./var"
EXIT_USAGE = 2


class TargetError(Exception):
    """The daemon's control API cannot be located from the arguments (usage error)."""

    code = EXIT_USAGE


@dataclass(frozen=True, slots=True)
class Target:
    """A located control API: a TCP base URL, or a Unix socket."""

    base_url: str
    socket: Path | None = None
    token: str | None = None

    def __repr__(self) -> str:
        return f"Target({self.where!r}, token={'set' if self.token else 'none'})"

    @property
    def where(self) -> str:
        """For messages: ``unix:/path`` or the URL."""
        return f"unix:{self.socket}" if self.socket is not None else self.base_url

    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token}"} if self.token else {}

    def client(self, timeout: float | httpx.Timeout = 10.0) -> httpx.Client:
        """A client for this control API (never reads proxy settings from the environment:
        the control API is local); raises ``httpx.ConnectError`` at once when the socket
        cannot be connected to (:meth:`probe`)."""
        transport = None
        if self.socket is not None:
            self.probe()
            transport = httpx.HTTPTransport(uds=str(self.socket))
        return httpx.Client(
            base_url=self.base_url,
            headers=self.headers(),
            timeout=timeout,
            transport=transport,
            trust_env=False,
        )

    def probe(self) -> None:
        """Connect to the socket once (and close it): a missing, stale or forbidden socket
        is reported before any request. (httpcore 1.0 leaves the socket of a failed Unix
        connect open until the garbage collector finds it.)"""
        assert self.socket is not None
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            try:
                sock.connect(str(self.socket))
            except OSError as exc:
                raise httpx.ConnectError(exc.strerror or str(exc)) from exc


def add_arguments(p: argparse.ArgumentParser, *, url_flag: str | None = "--url") -> None:
    """``--config``, ``--url`` (``url_flag``), ``--socket``, ``--state-dir``, ``--token``."""
    p.add_argument(
        "--config", "-c", help="the daemon's TOML config (its state dir has the control socket)"
    )
    if url_flag is not None:
        p.add_argument(
            url_flag,
            dest="control_url",
            metavar="URL",
            help="a TCP control listener, e.g. http://127.0.0.1:8081 (control.port)",
        )
    p.add_argument("--socket", metavar="PATH", help="the daemon's control socket")
    p.add_argument(
        "--state-dir",
        metavar="DIR",
        help="the daemon's state dir (default $ARGBRIDGE_STATE_DIR or ./var): DIR/control.sock",
    )
    p.add_argument(
        "--token",
        help="control token for --url, or env:NAME / file:PATH / credential:NAME "
        "(default $ARGBRIDGE_CONTROL_TOKEN)",
    )


def resolve(args: argparse.Namespace) -> Target:
    """The control API named by the arguments of :func:`add_arguments`."""
    config: str | None = getattr(args, "config", None)
    url: str | None = getattr(args, "control_url", None)
    socket_arg: str | None = getattr(args, "socket", None)
    state_dir: str | None = getattr(args, "state_dir", None)
    token_arg: str | None = getattr(args, "token", None)
    if url and url.startswith("unix:"):
        socket_arg, url = url.removeprefix("unix:"), None
    if url:
        token: str | None = None
        if token_arg:
            token = resolve_token(token_arg, "--token")
        elif os.environ.get("ARGBRIDGE_CONTROL_TOKEN"):
            token = os.environ["ARGBRIDGE_CONTROL_TOKEN"]
        elif config:
            ref = read_control_config(config)[1].get("token")
            if isinstance(ref, str):
                token = resolve_token(ref, f"{config}: control.token")
        return Target(url.rstrip("/"), token=token)
    if socket_arg:
        return Target(SOCKET_BASE, socket=Path(socket_arg))
    if config:
        return Target(SOCKET_BASE, socket=socket_of_config(config))
    directory = state_dir or os.environ.get("ARGBRIDGE_STATE_DIR") or DEFAULT_STATE_DIR
    return Target(SOCKET_BASE, socket=ControlConfig().socket_path(Path(directory)))


def read_control_config(path: str) -> tuple[Path, dict[str, Any]]:
    """``(state_dir, raw [control] table)`` of a config file, with environment overrides."""
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise TargetError(f"config file {path} does not exist") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise TargetError(f"cannot read {path}: {exc}") from None
    raw = data.get("control", {})
    if not isinstance(raw, dict):
        raise TargetError(f"{path}: control must be a table")
    raw = dict(raw)
    for key in ("enabled", "socket", "token"):
        env = os.environ.get(f"ARGBRIDGE_CONTROL__{key.upper()}")
        if env is not None:
            raw[key] = env
    state_dir = os.environ.get("ARGBRIDGE_STATE_DIR") or data.get("state_dir", DEFAULT_STATE_DIR)
    if not isinstance(state_dir, str):
        raise TargetError(f"{path}: state_dir must be a string")
    return Path(state_dir), raw


def socket_of_config(path: str) -> Path:
    from pydantic import ValidationError

    state_dir, raw = read_control_config(path)
    raw.pop("token", None)  # a secret reference: not needed for the socket
    try:
        control = ControlConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise TargetError(f"{path}: control.{where}: {first['msg']}") from None
    if not control.enabled:
        raise TargetError(f"{path}: control.enabled is false; the daemon has no control API")
    return control.socket_path(state_dir)


def resolve_token(ref: str, what: str) -> str:
    """A token value from a literal or an ``env:``/``file:``/``credential:`` reference."""
    from argbridge.config.base import resolve_secret

    if ref.startswith("credential:") and not os.environ.get("CREDENTIALS_DIRECTORY"):
        # Outside the unit: read the credential where systemd keeps it (root only).
        name = ref.removeprefix("credential:")
        ref = f"file:{SYSTEMD_CREDENTIALS}/{name}"
        hint = f" (pass --token file:/etc/argbridge/credentials/{name} or run as root)"
    else:
        hint = ""
    try:
        value: str = resolve_secret(ref).get_secret_value()
    except ValueError as exc:
        raise TargetError(f"{what}: {exc}{hint}") from None
    return value


def unreachable(target: Target, exc: BaseException) -> str:
    """Why the control API cannot be reached, with a hint."""
    if target.socket is not None:
        cause = exc.__cause__ or exc.__context__ or exc
        if isinstance(cause, PermissionError) or "Permission denied" in str(exc):
            return (
                f"cannot connect to {target.where}: permission denied (the socket is mode "
                "0600: run as the daemon's user or root)"
            )
        return (
            f"cannot connect to {target.where}: {type(exc).__name__}: {exc} (is the daemon "
            "running with this state dir? pass --config, --state-dir or --socket)"
        )
    return (
        f"cannot reach {target.where}: {type(exc).__name__}: {exc} "
        "(is control.port set and the daemon running?)"
    )
