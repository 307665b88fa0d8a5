"""Helpers shared by the benchmarks: percentiles, peak memory, a results table."""

from __future__ import annotations

import platform
import resource
import statistics
import sys
import time
from collections.abc import Sequence


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (nearest rank) of ``values``."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (MiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss() -> bool:
    """Start this process's peak-RSS count again from its current RSS (Linux
    ``/proc/self/clear_refs``), so :func:`peak_rss_since_reset_mib` gives one phase's
    peak; whether the kernel allowed it."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        return False
    return True


def peak_rss_since_reset_mib() -> float:
    """This process's peak RSS (MiB) since :func:`reset_peak_rss` (``VmHWM``)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return peak_rss_mib()


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def as_the_daemon() -> str:
    """Set up the garbage collector and malloc as the daemon does after start-up (the
    default ``runtime.gc_thresholds`` and ``malloc_*`` settings, then
    :func:`~argbridge.runtime.freeze_startup_heap`), for
    benchmarks that build components without an :class:`~argbridge.runtime.App`; returns
    a line for the report."""
    import gc

    from argbridge.config.settings import RuntimeConfig
    from argbridge.runtime import freeze_startup_heap, tune_collector, tune_malloc

    runtime = RuntimeConfig()
    tune_collector(runtime.gc_thresholds)
    malloc = tune_malloc(runtime.malloc_trim_threshold, runtime.malloc_mmap_threshold)
    freeze_startup_heap()
    return (
        f"as the daemon: gc thresholds {gc.get_threshold()}, start-up heap frozen, "
        f"malloc {', '.join(malloc) or 'glibc defaults'}"
    )


def header(title: str) -> None:
    print(f"== {title}")
    print(
        f"   python {platform.python_version()} on {platform.machine()}, argv: {' '.join(sys.argv)}"
    )
    print(f"   {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")


def row(label: str, value: str, note: str = "") -> None:
    print(f"   {label:<58} {value:>16}  {note}")
