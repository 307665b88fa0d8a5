"""The real daemon as a subprocess (``python -m argbridge run``), its JSON log lines on a
queue, so tests wait on what the daemon says (``daemon.ready``, ``sink.caught_up``…)
instead of sleeping; and :func:`run_cli` for one-shot commands."""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import orjson

Line = dict[str, Any]


class NoLogLine(AssertionError):
    """No log line of the daemon matched within the time given (the message shows the
    last lines it wrote)."""


class Daemon:
    """A running ``argbridge run`` whose log lines arrive on a queue."""

    def __init__(self, config: Path, *, env: dict[str, str] | None = None) -> None:
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        full_env.pop("NOTIFY_SOCKET", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "argbridge", "run", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=full_env,
        )
        self.pid = self.proc.pid
        self.lines: queue.Queue[Line | None] = queue.Queue()
        self.seen: list[Line] = []
        self.raw: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _pump(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            self.raw.append(raw.decode(errors="replace"))
            try:
                line = orjson.loads(raw)
            except orjson.JSONDecodeError:
                line = {"event": "non-json", "raw": raw.decode(errors="replace")}
            self.lines.put(line if isinstance(line, dict) else {"event": "non-json"})
        self.proc.stderr.close()
        self.lines.put(None)

    def wait_for(self, predicate: Callable[[Line], bool], timeout: float = 30) -> Line:
        """The first log line (from now on) for which ``predicate`` holds, within
        ``timeout`` seconds in all (a daemon that keeps logging other lines does not
        extend it); on a timeout the error shows the last lines seen."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise NoLogLine(
                    f"no matching daemon log line within {timeout:g} s; last lines: "
                    f"{self.seen[-12:]}"
                ) from None
            if line is None:
                raise AssertionError(f"daemon exited; last lines: {self.seen[-8:]}")
            self.seen.append(line)
            if predicate(line):
                return line

    def wait_event(self, name: str, timeout: float = 30) -> Line:
        return self.wait_for(lambda line: line.get("event") == name, timeout)

    def count(self, event: str) -> int:
        return sum(1 for line in self.seen if line.get("event") == event)

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM (if still running), wait; the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def run_cli(
    *args: str,
    env: dict[str, str] | None = None,
    unset: tuple[str, ...] = (),
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """``python -m argbridge ARGS`` to completion (text output); ``env`` is added to this
    process's environment, ``unset`` names variables removed from it."""
    full_env = {k: v for k, v in os.environ.items() if k not in unset}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "argbridge", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )


@contextlib.contextmanager
def logged_daemon(
    config: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """``argbridge run`` with its output in ``<config>.log`` (a long run whose log is read
    afterwards, not line by line): SIGTERM on exit, killed after 30 s."""
    exe = Path(sys.executable).with_name("argbridge")
    with open(config.with_suffix(".log"), "wb") as log:
        proc = subprocess.Popen(
            [str(exe), "run", "--config", str(config)],
            env={**os.environ, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            yield proc
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
