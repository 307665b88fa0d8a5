"""The HTTP planes see the daemon only through :class:`ControlFacade`: no module of
:mod:`argbridge.http` imports :mod:`argbridge.runtime` (not even for type checking), and
the runtime's ``App`` satisfies the facade structurally (checked by mypy here)."""

from __future__ import annotations

import ast
from pathlib import Path

from argbridge.http.facade import ControlFacade, HealthView, open_journal
from argbridge.runtime import App
from tests.conftest import settings as make_settings

HTTP = Path(__file__).resolve().parents[2] / "src" / "argbridge" / "http"


def imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_no_http_module_imports_the_runtime():
    modules = sorted(HTTP.glob("*.py"))
    assert len(modules) > 5
    for path in modules:
        bad = {m for m in imported_modules(path) if m.split(".")[:2] == ["argbridge", "runtime"]}
        assert not bad, f"{path.name} imports {bad}"


def test_the_app_is_a_control_facade(tmp_path):
    settings = make_settings(tmp_path)
    app = App(settings, handle_signals=False)
    facade: ControlFacade = app
    health: HealthView = app
    assert facade.settings is settings and "journal" in health.health()
    # Before the daemon runs, the journal is not open (and the facade says so).
    assert open_journal(facade) is None
