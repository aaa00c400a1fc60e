"""The card-debit records on file in the SQLite ledger (``offline_records``): every record a
terminal sends, kept once per (PSAM terminal number, serial) with its terminal and batch — the
statements :class:`ledger.sqlite_ledger.SqliteStore` runs on its writer thread."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from ledger import sql_rows as rows
from ledger.core import OfflineRecord
from ledger.state import Held, offline_decision

#: Kept once per card debit; a verified record replaces an unverified one (a forgery seen first);
#: its terminal sending it again in a later batch moves it there (never verified → unverified).
_UPSERT_OFFLINE = (
    "INSERT INTO offline_records (psam_terminal_no, psam_serial, terminal_id, batch_no,"
    " application_serial, purse, amount_fen, tac, card_datetime, transfer_id, card_counter,"
    " received_at_us) VALUES {values}"
    " ON CONFLICT (psam_terminal_no, psam_serial)"
    " DO UPDATE SET terminal_id = excluded.terminal_id, batch_no = excluded.batch_no,"
    " application_serial = excluded.application_serial, purse = excluded.purse,"
    " amount_fen = excluded.amount_fen, tac = excluded.tac,"
    " card_datetime = excluded.card_datetime, transfer_id = excluded.transfer_id,"
    " card_counter = excluded.card_counter, received_at_us = excluded.received_at_us"
    " WHERE (offline_records.transfer_id IS NULL AND excluded.transfer_id IS NOT NULL)"
    " OR (offline_records.terminal_id = excluded.terminal_id"
    " AND offline_records.batch_no <> excluded.batch_no"
    " AND (excluded.transfer_id IS NOT NULL OR offline_records.transfer_id IS NULL))"
)
#: What is on file for some (PSAM terminal number, serial) pairs: one statement for many.
_SELECT_HELD = (
    "SELECT o.psam_terminal_no, o.psam_serial, o.transfer_id IS NOT NULL, o.terminal_id,"
    " o.batch_no FROM (VALUES {values}) AS v JOIN offline_records AS o"
    " ON o.psam_terminal_no = v.column1 AND o.psam_serial = v.column2"
)
OFFLINE_COLUMNS = (
    "psam_terminal_no, psam_serial, terminal_id, batch_no, application_serial, purse,"
    " amount_fen, tac, card_datetime, transfer_id, card_counter"
)


class OfflineRecords:
    """The offline-record statements of a store with a ``conn``, inside its batch transaction."""

    @property
    def conn(self) -> sqlite3.Connection:
        raise NotImplementedError

    def record_offline(self, records: Sequence[OfflineRecord]) -> list[bool]:
        """One SELECT of what is on file, one upsert of the rows to write (a chunk of rows per
        statement): a batch upload of thousands of records costs a few statements."""
        held = self._offline_held(records)
        results, writes = [], []
        at_us = rows.now_us()
        for record in records:
            key = (record.psam_terminal_no, record.psam_serial)
            new, write = offline_decision(held.get(key), record)
            if write:
                held[key] = (record.transfer_id is not None, record.terminal_id, record.batch_no)
                writes.append((*offline_row(record), at_us))
            results.append(new)
        rows.execute_values(self.conn, _UPSERT_OFFLINE, writes)
        return results

    def _offline_held(self, records: Sequence[OfflineRecord]) -> dict[tuple[str, int], Held]:
        """(PSAM terminal number, serial) → (verified, terminal, batch), for the records'
        debits on file."""
        keys = list(dict.fromkeys((r.psam_terminal_no, r.psam_serial) for r in records))
        found = rows.execute_values(self.conn, _SELECT_HELD, keys)
        return {
            (psam, int(serial)): (bool(verified), terminal, int(batch))
            for psam, serial, verified, terminal, batch in found
        }

    def offline_counters(
        self, cards: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], list[tuple[int, str]]]:
        found: dict[tuple[str, str], list[tuple[int, str]]] = {}
        sql = (
            "SELECT card_counter, card_datetime FROM offline_records WHERE application_serial = ?"
            " AND purse = ? AND transfer_id IS NOT NULL AND card_counter IS NOT NULL"
            " ORDER BY card_counter"
        )
        for card in dict.fromkeys(cards):
            found[card] = [(int(c), d) for c, d in self.conn.execute(sql, card)]
        return found

    def offline_records(self, terminal_id: str, batch_no: int) -> list[OfflineRecord]:
        sql = (
            f"SELECT {OFFLINE_COLUMNS} FROM offline_records"
            " WHERE terminal_id = ? AND batch_no = ? ORDER BY seq"
        )
        found = self.conn.execute(sql, (terminal_id, batch_no))
        return [OfflineRecord(*row) for row in found]


def offline_row(record: OfflineRecord) -> tuple[Any, ...]:
    """The record's columns in :data:`OFFLINE_COLUMNS` order (shared with the PostgreSQL ledger)."""
    r = record
    return (
        r.psam_terminal_no,
        r.psam_serial,
        r.terminal_id,
        r.batch_no,
        r.application_serial,
        r.purse,
        r.amount_fen,
        r.tac,
        r.card_datetime,
        r.transfer_id,
        r.card_counter,
    )
