"""The arga package's import rules: followers never import their source, and a
production source never imports the simulator."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[3] / "src" / "argbridge" / "sources" / "arga"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
    return out


@pytest.mark.parametrize("module", ["results", "demorun", "discovery", "api"])
def test_followers_do_not_import_their_source(module):
    imports = _imports(PKG / f"{module}.py")
    assert "argbridge.sources.arga.source" not in imports
    assert "argbridge.sources.arga" not in imports


def test_production_source_does_not_import_the_simulator():
    for path in PKG.glob("*.py"):
        assert not any(m.startswith("argbridge.simulator") for m in _imports(path)), path
    code = (
        "import sys, argbridge.registry as r, argbridge.sources.arga.source\n"
        "assert not [m for m in sys.modules if m.startswith('argbridge.simulator')]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)


@pytest.mark.parametrize(
    "module", ["follower", "ssefollow", "wsconnect", "pipeline", "sse", "websocket", "poll"]
)
def test_the_shared_skeleton_and_generic_sources_do_not_import_arga(module):
    imports = _imports(PKG.parent / f"{module}.py")
    assert not any(m.startswith("argbridge.sources.arga") for m in imports), imports


def test_arga_followers_use_the_shared_skeleton():
    from argbridge.sources.arga.demorun import DemoRunFollower
    from argbridge.sources.arga.results import ResultsFollower
    from argbridge.sources.follower import StreamFollower
    from argbridge.sources.sse import SSEFollower
    from argbridge.sources.ssefollow import SSEFollowerBase
    from argbridge.sources.websocket import WebSocketFollower
    from argbridge.sources.wsconnect import WsFollowerBase

    assert issubclass(ResultsFollower, SSEFollowerBase) and issubclass(SSEFollower, SSEFollowerBase)
    assert issubclass(DemoRunFollower, StreamFollower)
    assert issubclass(WebSocketFollower, StreamFollower)
    # One WebSocket read loop for both, as one SSE follower base.
    assert issubclass(DemoRunFollower, WsFollowerBase)
    assert issubclass(WebSocketFollower, WsFollowerBase)
    assert "ws_attempt" in _imports_names(PKG / "demorun.py")
    assert "ws_attempt" in _imports_names(PKG.parent / "websocket.py")


def _imports_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
