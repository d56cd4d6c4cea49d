"""Bulk-load benchmark: COPY vs plain executemany into ``feature_store`` on a real PostgreSQL.

    uv run python bench/load_features.py [--rows 1000000] [--executemany-rows 20000]
        [--url postgresql://postgres@127.0.0.1:5432/test]

Works in a database of its own (created, migrated, dropped). Loads ``--rows`` synthetic
applications twice with COPY (first load, then a reload that appends a version over a full
table) and ``--executemany-rows`` of them with ``executemany`` INSERTs (slow: a subset, its
rate printed per row). Prints rows/s and the ratio. Figures, not assertions.
"""

from __future__ import annotations

import argparse
import os
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from fraudscore_adapters.baf import clean_frame
from fraudscore_adapters.baf.synthetic import generate
from fraudscore_adapters.bulkload import copy_features, insert_features_executemany
from fraudscore_adapters.migrate import apply_migrations

MIGRATIONS = Path(__file__).resolve().parents[1] / "migrations"


def timed(label: str, rows: int, fn: object) -> tuple[str, int, float]:
    started = time.perf_counter()
    fn()  # type: ignore[operator]
    seconds = time.perf_counter() - started
    print(f"  {label}: {rows:,} rows in {seconds:.1f}s = {rows / seconds:,.0f} rows/s", flush=True)
    return label, rows, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--executemany-rows", type=int, default=20_000)
    default_url = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--url", default=default_url)
    args = parser.parse_args()

    print(f"generating {args.rows:,} synthetic rows", flush=True)
    frame, _ = clean_frame(generate(args.rows, seed=7), keep=["fraud_bool", "month"])
    frame = frame.drop("fraud_bool", "month").with_row_index("user_id")

    name = f"fraudscore_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = urlunsplit(urlsplit(args.url)._replace(path=f"/{name}"))
    try:
        apply_migrations(url, MIGRATIONS)
        with psycopg.connect(url) as conn:
            results = [
                timed("COPY, empty table", args.rows, lambda: copy_features(conn, frame)),
                timed("COPY, reload (appends)", args.rows, lambda: copy_features(conn, frame)),
                timed(
                    "executemany",
                    args.executemany_rows,
                    lambda: insert_features_executemany(conn, frame.head(args.executemany_rows)),
                ),
            ]
            size = conn.execute(
                "SELECT pg_size_pretty(pg_total_relation_size('feature_store'))"
            ).fetchone()
    finally:
        with psycopg.connect(args.url, autocommit=True) as admin:
            drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
            admin.execute(drop.format(sql.Identifier(name)))

    rates = {label: rows / seconds for label, rows, seconds in results}
    print(f"\nfeature_store after two loads: {size[0] if size else '?'}")
    print(f"{'method':<26}{'rows/s':>12}{'vs executemany':>18}")
    for label, rate in rates.items():
        print(f"{label:<26}{rate:>12,.0f}{rate / rates['executemany']:>17.1f}x")
    print("target: >= 50,000 rows/s for 1,000,000 applications")


if __name__ == "__main__":
    main()
