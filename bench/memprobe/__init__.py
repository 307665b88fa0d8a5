"""Where a daemon's memory is (bench only): its mappings by kind from
``/proc/PID/smaps``, and :func:`probe`, which asks the in-process probe
(``bench/memprobe/sitecustomize.py``) for glibc's and Python's allocator statistics."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from tests.support.procmem import smaps

__all__ = ["arenas", "env", "probe", "smaps"]

HERE = Path(__file__).parent
_MIB = 1024 * 1024


def env(directory: Path, *, tracemalloc: int = 0) -> dict[str, str]:
    """The environment that loads the probe into a daemon."""
    out = {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])),
        "ARGBRIDGE_MEMPROBE": str(directory),
    }
    if tracemalloc:
        out["PYTHONTRACEMALLOC"] = str(tracemalloc)
    return out


def arenas(xml: str) -> list[tuple[int, float, float]]:
    """``(arena, total MiB, free MiB)`` from glibc's ``malloc_info`` output."""
    out = []
    for m in re.finditer(r'<heap nr="(\d+)">(.*?)</heap>', xml, re.S):
        body = m.group(2)
        free = sum(
            int(x)
            for x in re.findall(r'<total type="(?:fast|rest)" count="\d+" size="(\d+)"', body)
        )
        system = re.search(r'<system type="current" size="(\d+)"', body)
        out.append((int(m.group(1)), int(system.group(1)) / _MIB if system else 0.0, free / _MIB))
    return out


def probe(directory: Path, name: str, timeout: float = 30.0) -> str:
    """Ask the daemon's probe for a dump named ``name``; a short text summary of it."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.req").touch()
    deadline = time.monotonic() + timeout
    done = directory / f"{name}.done"
    while not done.exists():
        if time.monotonic() > deadline:
            return f"probe {name}: no answer"
        time.sleep(0.05)
    lines = [f"probe {name}:"]
    for nr, total, free in arenas((directory / f"{name}.malloc.xml").read_text()):
        lines.append(
            f"    malloc arena {nr}: {total:7.1f} MiB from the system, {free:6.1f} MiB free"
        )
    pym = (directory / f"{name}.pymalloc.txt").read_text()
    for key in ("# arenas allocated current", "# arenas highwater mark", "Total"):
        for line in pym.splitlines():
            if line.startswith(key):
                lines.append("    pymalloc " + " ".join(line.split()))
    lines.append("    " + "\n    ".join((directory / f"{name}.txt").read_text().splitlines()[:16]))
    return "\n".join(lines)
