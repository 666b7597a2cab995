"""What the read-only connection of `madmine sql` costs on a local workspace.

`madmine sql` reads the workspace through madmine.readonly_fs (an fsspec filesystem DuckDB
calls back into Python for) instead of DuckDB's own local file system, so that it can write
nothing. This times the same queries both ways on a scored run shaped like a real one
(bench.selection's generator): DuckDB's native reads (duck.connect, as `madmine select`
uses) and the read-only Session. Each query runs `--repeat` times; the median is printed.

    python -m bench.sql                       # 200,000 images x 5 competitors
    python -m bench.sql --images 50000 --competitors 3
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from bench.selection import generate
from madmine import duck
from madmine.workspace import Workspace

QUERIES = {
    "count pairs": "SELECT count(*) FROM pairs",
    "mean d per competitor": "SELECT competitor, round(avg(d), 9) FROM pairs GROUP BY ALL ORDER BY ALL",
    "top 25 of a join": "SELECT p.image_id, max(p.d) AS d FROM pairs p JOIN manifest USING (image_id) "
                        "GROUP BY ALL ORDER BY d DESC, image_id LIMIT 25",
    "predictions scan": "SELECT model, sum(list_sum(class_pixels)) FROM predictions GROUP BY ALL ORDER BY ALL",
}


def median_seconds(run, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200_000)
    parser.add_argument("--competitors", type=int, default=5)
    parser.add_argument("--shard-size", type=int, default=2_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-sql-"))
    try:
        generate(root, args.images, args.competitors, args.shard_size)
        ws = Workspace(str(root))
        native = duck.connect(ws)
        duck.create_views(native, ws)
        session = duck.Session(ws)
        session.refresh()
        files = len(list(root.rglob("*.parquet")))
        print(f"{args.images} images x {args.competitors} competitors, {files} Parquet files; "
              f"median of {args.repeat} runs, seconds")
        print(f"{'query':<24} {'native':>8} {'read-only':>10} {'ratio':>6}")
        for name, query in QUERIES.items():
            assert native.execute(query).fetchall() == session.con.execute(query).fetchall(), name
            fast = median_seconds(lambda: native.execute(query).fetchall(), args.repeat)
            safe = median_seconds(lambda: session.con.execute(query).fetchall(), args.repeat)
            print(f"{name:<24} {fast:>8.3f} {safe:>10.3f} {safe / fast:>6.2f}")
        session.close()
        native.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
