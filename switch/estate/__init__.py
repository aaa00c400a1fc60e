"""The estate: terminals, PSAMs, institutions, offline parameters, the blacklist, and read-only
views of bills and cards — the operations the CLI (`medswitch terminals|psams|institutions|
parameters|blacklist|bills|cards`) and the daemon's admin API (`switch.estate.admin`) both call.

Every operation takes the back office's engine (a SQLAlchemy ``Engine`` on SQLite, the bridge's
``PgEngine`` on PostgreSQL: the same Core statements) and runs in one transaction; every change
appends who, what and when to the ``audit_log`` in that transaction. A running daemon sees a
change without a restart: terminal and institution changes move the estate's change count
(triggers, migration 0011) and the daemon forgets the terminal records it keeps; parameters
are read at each parameter download; the blacklist by version at each blacklist download.
Card numbers leave this package masked (first 6, last 4).
"""
