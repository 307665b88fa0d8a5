"""A memory probe for a daemon under a benchmark (bench only, never shipped).

Put this directory first on the daemon's ``PYTHONPATH`` and set ``ARGBRIDGE_MEMPROBE``
to a directory: a thread then watches it for ``<name>.req`` files and answers each with
``<name>.txt``: glibc's per-arena statistics (``malloc_info``; a name ending in ``-trim``: after
``gc.collect()`` and ``malloc_trim(0)``), Python's object
allocator (``sys._debugmallocstats``), the collector's counts, the most numerous object
types and, with ``PYTHONTRACEMALLOC`` set, a ``tracemalloc`` snapshot (``<name>.snap``)
that :mod:`bench.memprobe.diff` compares.
"""

from __future__ import annotations

import collections
import ctypes
import gc
import os
import sys
import threading
import time


def _dump(out: str) -> None:
    libc = ctypes.CDLL(None)
    if out.endswith("-trim"):  # what a trim now would give back
        gc.collect()
        libc.malloc_trim(0)
    libc.fopen.restype = ctypes.c_void_p
    libc.fopen.argtypes = (ctypes.c_char_p, ctypes.c_char_p)
    libc.fclose.argtypes = (ctypes.c_void_p,)
    libc.malloc_info.argtypes = (ctypes.c_int, ctypes.c_void_p)
    fp = libc.fopen((out + ".malloc.xml").encode(), b"w")
    libc.malloc_info(0, fp)
    libc.fclose(fp)
    # sys._debugmallocstats writes to C stderr: point fd 2 at a file meanwhile.
    saved = os.dup(2)
    fd = os.open(out + ".pymalloc.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        os.dup2(fd, 2)
        sys._debugmallocstats()
    finally:
        os.dup2(saved, 2)
        os.close(fd)
        os.close(saved)
    counts = collections.Counter(type(o).__name__ for o in gc.get_objects())
    with open(out + ".txt", "w") as fh:
        fh.write(f"gc counts {gc.get_count()} frozen {gc.get_freeze_count()}\n")
        for name, n in counts.most_common(40):
            fh.write(f"{n:>9} {name}\n")
    import tracemalloc

    if tracemalloc.is_tracing():
        tracemalloc.take_snapshot().dump(out + ".snap")


def _watch(directory: str) -> None:
    os.makedirs(directory, exist_ok=True)
    while True:
        time.sleep(0.2)
        for name in sorted(os.listdir(directory)):
            if name.endswith(".req"):
                os.unlink(os.path.join(directory, name))
                try:
                    _dump(os.path.join(directory, name[:-4]))
                finally:
                    open(os.path.join(directory, name[:-4] + ".done"), "w").close()


_dir = os.environ.get("ARGBRIDGE_MEMPROBE")
# Only in the daemon (``argbridge run``), not in a test runner that passes its
# environment on to the daemon it starts.
if _dir and sys.argv and os.path.basename(sys.argv[0]) == "argbridge":
    threading.Thread(target=_watch, args=(_dir,), name="memprobe", daemon=True).start()
