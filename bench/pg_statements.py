"""Statements per exchange from ``pg_stat_statements``, for a server that preloads it
(``shared_preload_libraries = 'pg_stat_statements'``: a restart, so a private cluster, never the
shared one). ``reset`` before the timed phase, ``report`` after it: each statement's calls and
its backend's planning and execution time per exchange (planning is
counted with ``pg_stat_statements.track_planning = on``), most called first.

    MEDSWITCH_TEST_PG_DSN=postgresql://postgres@127.0.0.1:PORT/test \\
        python -m bench.bench_workers --workers 1 --statements
"""

from __future__ import annotations

import asyncpg  # type: ignore[import-untyped]

_READ = (
    "SELECT calls, total_exec_time + total_plan_time, rows,"
    " left(regexp_replace(query, '\\s+', ' ', 'g'), $1)"
    " FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database"
    " WHERE datname = current_database()) AND query NOT LIKE '%pg_stat_%'"
    " ORDER BY calls DESC"
)


async def reset(dsn: str) -> bool:
    """Whether the server counts statements (the counts are zeroed now if so)."""
    connection = await asyncpg.connect(dsn)
    try:
        present = await connection.fetchval(
            "SELECT count(*) FROM pg_extension WHERE extname = 'pg_stat_statements'"
        )
        if not present:
            return False
        await connection.execute("SELECT pg_stat_statements_reset()")
        return True
    finally:
        await connection.close()


async def report(dsn: str, exchanges: int, lines: int = 40, chars: int = 90) -> str:
    """Calls and ms of planning and execution per exchange of the statements run since ``reset``."""
    connection = await asyncpg.connect(dsn)
    try:
        rows = await connection.fetch(_READ, chars)
    finally:
        await connection.close()
    per = max(exchanges, 1)
    total = sum(int(row[0]) for row in rows) / per
    head = f"  {total:.2f} statements per exchange ({len(rows)} distinct); calls, ms per exchange:"
    body = [
        f"  {int(calls) / per:6.3f} {float(ms) / per:6.3f}  {query}"
        for calls, ms, _, query in rows[:lines]
    ]
    return "\n".join([head, *body])
