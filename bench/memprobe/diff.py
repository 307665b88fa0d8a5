"""Compare two tracemalloc snapshots written by the probe:
``python -m bench.memprobe.diff OLD.snap NEW.snap [N] [lineno|traceback|filename]``."""

from __future__ import annotations

import sys
import tracemalloc


def main() -> None:
    old = tracemalloc.Snapshot.load(sys.argv[1])
    new = tracemalloc.Snapshot.load(sys.argv[2])
    top = int(sys.argv[3]) if len(sys.argv) > 3 else 25
    key = sys.argv[4] if len(sys.argv) > 4 else "lineno"
    print(
        f"traced: {sum(s.size for s in old.statistics('filename')) / 2**20:.1f} MiB -> "
        f"{sum(s.size for s in new.statistics('filename')) / 2**20:.1f} MiB"
    )
    for stat in new.compare_to(old, key)[:top]:
        print(stat)
        if key == "traceback":
            for line in stat.traceback.format()[-8:]:
                print("      " + line)


if __name__ == "__main__":
    main()
