"""A process's memory from the outside (``/proc/PID/smaps``), by kind: what the soak
test and bench/bench_bounds.py print to say where a daemon's RSS is."""

from __future__ import annotations

import re
from collections import defaultdict

_MIB = 1024 * 1024
_HEAP_MAX = 64 * _MIB  # glibc's per-thread heap reservation (HEAP_MAX_SIZE on 64-bit)
_HEAD = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ \S+\s*(.*)$")


def smaps(pid: int) -> dict[str, float]:
    """RSS in MiB by kind: ``heap`` (glibc's main arena), ``thread-arenas`` (64 MiB-aligned
        anonymous mappings: glibc's per-thread arenas), ``anon`` (other anonymous memory:
        Python's object arenas, large mallocs, thread stacks), ``leveldb-tables`` (the journal's
    table files, which LevelDB maps into memory to read them), ``files`` (code, other files)."""
    out: dict[str, float] = defaultdict(float)
    kind = "anon"
    with open(f"/proc/{pid}/smaps") as fh:
        for line in fh:
            m = _HEAD.match(line)
            if m:
                start, name = int(m.group(1), 16), m.group(3)
                if name == "[heap]":
                    kind = "heap"
                elif name.endswith(".ldb"):
                    kind = "leveldb-tables"
                elif name.startswith("/"):
                    kind = "files"
                elif name:
                    kind = name.strip("[]")
                elif start % _HEAP_MAX == 0:
                    kind = "thread-arenas"
                else:
                    kind = "anon"
            elif line.startswith("Rss:"):
                out[kind] += int(line.split()[1]) / 1024
    return dict(out)


def summary(pid: int) -> str:
    """``smaps`` as one line: ``heap 34.2, anon 58.6, ... MiB`` (kinds over 0.5 MiB)."""
    kinds = smaps(pid)
    return ", ".join(f"{k} {v:.1f}" for k, v in sorted(kinds.items()) if v >= 0.5) + " MiB"
