"""The Dockerfile agrees with the package (no Docker engine runs here).

Parses the Dockerfile's instructions and checks them against pyproject.toml, the
container config, the HTTP server's routes and the runtime's signal handling; the
HEALTHCHECK command itself is run against a live in-process daemon.
"""

from __future__ import annotations

import fnmatch
import importlib
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import anyio
import pytest

from argbridge.config.settings import HttpConfig, MetricsConfig, load_settings
from argbridge.runtime import App
from tests.conftest import free_port
from tests.support.ops import base_url, ops_settings, running

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Instruction:
    stage: int
    keyword: str
    args: str

    def exec_form(self) -> list[str]:
        value = json.loads(self.args)
        assert isinstance(value, list) and all(isinstance(v, str) for v in value)
        return value


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with line continuations joined; ARG defaults substituted in FROM."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    assert not pending, "dangling line continuation"
    args: dict[str, str] = {}
    out: list[Instruction] = []
    stage = -1
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        rest = rest.strip()
        if keyword == "ARG" and "=" in rest and stage < 0:
            name, _, default = rest.partition("=")
            args[name] = default
        if keyword == "FROM":
            stage += 1
            rest = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), rest)
        out.append(Instruction(stage, keyword, rest))
    return out


@pytest.fixture(scope="module")
def dockerfile() -> list[Instruction]:
    return parse_dockerfile((ROOT / "Dockerfile").read_text())


def final(dockerfile: list[Instruction], keyword: str) -> list[Instruction]:
    last = max(i.stage for i in dockerfile)
    return [i for i in dockerfile if i.stage == last and i.keyword == keyword]


def only(dockerfile: list[Instruction], keyword: str) -> Instruction:
    found = final(dockerfile, keyword)
    assert len(found) == 1, f"expected one {keyword} in the final stage, got {found}"
    return found[0]


def container_config_path(dockerfile: list[Instruction]) -> tuple[Path, str]:
    """(repo file, image path) of the config COPY'd into /etc/argbridge/."""
    for copy in final(dockerfile, "COPY"):
        parts = shlex.split(copy.args)
        if parts[-1].startswith("/etc/argbridge/"):
            return ROOT / parts[0], parts[-1]
    raise AssertionError("no config is copied to /etc/argbridge/")


def test_multi_stage_slim_python_311(dockerfile):
    froms = [i for i in dockerfile if i.keyword == "FROM"]
    assert len(froms) >= 2
    assert froms[0].args.endswith("AS build")
    for f in froms:
        assert f.args.split()[0] == "python:3.11-slim"
    build_runs = " ".join(i.args for i in dockerfile if i.stage == 0 and i.keyword == "RUN")
    assert "pip wheel" in build_runs
    copies = final(dockerfile, "COPY")
    assert any(c.args.startswith("--from=build ") for c in copies)


def test_runs_as_a_non_root_user(dockerfile):
    user = only(dockerfile, "USER").args
    name = user.split(":")[0]
    assert name not in ("root", "0") and name.isdigit(), "use a numeric non-root UID"


def test_entry_point_is_the_packaged_console_script(dockerfile):
    assert only(dockerfile, "ENTRYPOINT").exec_form() == ["argbridge"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, attr = scripts["argbridge"].partition(":")
    assert callable(getattr(importlib.import_module(module), attr))
    cmd = only(dockerfile, "CMD").exec_form()
    _, image_path = container_config_path(dockerfile)
    assert image_path == "/etc/argbridge/argbridge.toml"
    assert cmd == ["run", "--config", image_path]
    from argbridge.cli import build_parser

    parsed = build_parser().parse_args(cmd)
    assert parsed.command == "run" and parsed.config == "/etc/argbridge/argbridge.toml"


def test_volume_is_the_state_dir_of_the_container_config(dockerfile, monkeypatch):
    volume = only(dockerfile, "VOLUME")
    volumes = volume.exec_form() if volume.args.startswith("[") else volume.args.split()
    assert volumes == ["/var/lib/argbridge"]
    for key in list(os.environ):
        if key.startswith("ARGBRIDGE_"):
            monkeypatch.delenv(key)
    repo_file, _ = container_config_path(dockerfile)
    settings = load_settings(repo_file)
    assert str(settings.state_dir) == "/var/lib/argbridge"
    assert only(dockerfile, "WORKDIR").args == "/var/lib/argbridge"
    # The state dir is created for the non-root user before the VOLUME is declared.
    runs = " ".join(i.args for i in final(dockerfile, "RUN"))
    assert "-o argbridge" in runs and "/var/lib/argbridge" in runs


def test_exposed_ports_are_the_webhook_and_metrics_listeners(dockerfile):
    exposed = only(dockerfile, "EXPOSE").args.split()
    assert exposed == [str(HttpConfig().port), str(MetricsConfig().port)]
    repo_file, _ = container_config_path(dockerfile)
    settings = load_settings(repo_file)
    assert settings.http.enabled and settings.http.host == "0.0.0.0"
    assert str(settings.http.port) == exposed[0]
    assert settings.metrics.listener == "own" and str(settings.metrics.port) == exposed[1]
    # The control API is never a published port: the socket in the volume, for
    # `docker exec argbridge argbridge status --config /etc/argbridge/argbridge.toml`.
    assert settings.control.enabled and settings.control.port is None
    assert settings.control.socket_path(settings.state_dir).parent == settings.state_dir


def _healthcheck(dockerfile: list[Instruction]) -> tuple[list[str], str]:
    check = only(dockerfile, "HEALTHCHECK").args
    assert "--timeout=" in check and "--interval=" in check
    command = check[check.index("CMD ") + 4 :]
    env = " ".join(i.args for i in final(dockerfile, "ENV"))
    url = re.search(r"HEALTHCHECK_URL=(\S+)", env)
    assert url, "HEALTHCHECK_URL is not set"
    return json.loads(command), url.group(1)


def test_healthcheck_targets_healthz_on_the_exposed_port(dockerfile, tmp_path):
    argv, url = _healthcheck(dockerfile)
    assert argv[0] == "python", "slim images have python, not curl"
    parts = urlsplit(url)
    assert parts.path == "/healthz"
    assert str(parts.port) == only(dockerfile, "EXPOSE").args.split()[0]
    server = App(ops_settings(tmp_path, 0), handle_signals=False).http
    assert server is not None
    handler, _, _ = server.router.match("GET", parts.path)
    assert handler is not None
    # The webhook listener the health check reaches has no control or metrics routes.
    for path in ("/metrics", "/control/status"):
        assert server.router.match("GET", path)[0] is None


async def test_healthcheck_command_against_a_live_daemon(dockerfile, tmp_path):
    argv, _ = _healthcheck(dockerfile)
    argv = [sys.executable, *argv[1:]]
    app = App(ops_settings(tmp_path, free_port()), handle_signals=False)
    async with running(app):
        env = {**os.environ, "HEALTHCHECK_URL": base_url(app) + "/healthz"}
        healthy = await _run(argv, env)
    assert healthy.returncode == 0, healthy.stderr
    env = {**os.environ, "HEALTHCHECK_URL": f"http://127.0.0.1:{free_port()}/healthz"}
    down = await _run(argv, env)
    assert down.returncode == 1


async def _run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    return await anyio.run_process(argv, env=env, check=False)


def test_stop_signal_is_sigterm_and_the_runtime_handles_it(dockerfile):
    assert only(dockerfile, "STOPSIGNAL").args == "SIGTERM"
    source = (ROOT / "src" / "argbridge" / "runtime.py").read_text()
    assert "signal.SIGTERM" in source


def test_copied_sources_exist_and_are_not_dockerignored(dockerfile):
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def ignored(path: str) -> bool:
        result = False
        for pattern in patterns:
            negate = pattern.startswith("!")
            pat = pattern.lstrip("!")
            if fnmatch.fnmatch(path, pat) or fnmatch.fnmatch(path, pat.replace("**/", "")):
                result = not negate
        return result

    for copy in (i for i in dockerfile if i.keyword == "COPY"):
        parts = shlex.split(copy.args)
        if parts[0].startswith("--from="):
            continue
        for source in parts[:-1]:
            if "[" in source:  # optional glob (README.m[d])
                continue
            assert (ROOT / source).exists(), f"COPY source {source} does not exist"
            assert not ignored(source), f"COPY source {source} is excluded by .dockerignore"
    for heavy in (".venv", "var", ".git"):
        assert ignored(heavy), f"{heavy} should be in .dockerignore"
    assert not ignored("src/argbridge/samples/replay.jsonl")
