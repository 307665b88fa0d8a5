"""One daemon per state dir: the lock, and a second real daemon refused with the holder's pid."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from argbridge.statelock import LOCK_NAME, StateDirLock, StateDirLocked
from tests.support.process import Daemon


def test_second_lock_on_the_same_dir_is_refused_naming_the_pid(tmp_path: Path):
    with StateDirLock(tmp_path) as first:
        assert first.held
        assert (tmp_path / LOCK_NAME).read_text().strip() == str(os.getpid())
        with pytest.raises(StateDirLocked) as info:
            StateDirLock(tmp_path).acquire()
        assert info.value.pid == os.getpid()
        assert f"pid {os.getpid()}" in str(info.value)
        assert str(tmp_path) in str(info.value)
    # Released: the next one gets it.
    with StateDirLock(tmp_path) as again:
        assert again.held


def test_a_killed_holder_leaves_no_stale_lock(tmp_path: Path):
    code = (
        "import sys, os, signal\n"
        "from pathlib import Path\n"
        "from argbridge.statelock import StateDirLock\n"
        f"StateDirLock(Path({str(tmp_path)!r})).acquire()\n"
        "print('locked', flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert proc.stdout.strip() == "locked"
    with StateDirLock(tmp_path) as lock:
        assert lock.held


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "argbridge.toml"
    path.write_text(
        f'state_dir = "{tmp_path / "state"}"\n'
        '[log]\nformat = "json"\n[http]\nenabled = false\n'
        '[sources.sample]\ntype = "replay"\ninterval = "50ms"\nloop = true\n'
        '[sinks.file]\ntype = "file"\npath = "events.jsonl"\n'
    )
    return path


@pytest.mark.slow
def test_second_daemon_on_the_same_state_dir_exits_non_zero_naming_the_holder(tmp_path: Path):
    config = _config(tmp_path)
    with Daemon(config) as first:
        first.wait_event("daemon.ready")
        second = subprocess.run(
            [sys.executable, "-m", "argbridge", "run", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 3, second.stderr
        assert f"in use by pid {first.pid}" in second.stderr
        assert str(tmp_path / "state") in second.stderr
        assert "daemon.ready" not in second.stderr
        # The first one is unaffected and stops cleanly.
        assert first.proc.poll() is None
        assert first.stop() == 0
