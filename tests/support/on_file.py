"""The cards and PSAMs a deployment holds on file, as the daemon tests name them, and the first of
each in a SQLite deployment (``Daemon.first_card`` reads either backend)."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path


@dataclass
class CardOnFile:
    card_no: str
    serial: str  # the ledger's name for the card
    cardholder_id: str


def first_card(database: Path, offset: int = 0) -> CardOnFile:
    """The first card by number (or the one OFFSET places after it)."""
    with sqlite3.connect(database) as connection:
        row = connection.execute(
            "SELECT card_no, application_serial, cardholder_id FROM cards ORDER BY card_no"
            " LIMIT 1 OFFSET ?",
            (offset,),
        ).fetchone()
    return CardOnFile(*row)


@dataclass
class PsamOnFile:
    serial: str
    terminal_no: str  # 12 digits: the terminal number bound into every TAC
    institution_id: str
    terminal_id: str  # the POS it is bound to


def first_psam(database: Path) -> PsamOnFile:
    with sqlite3.connect(database) as connection:
        row = connection.execute(
            "SELECT serial, psam_terminal_no, institution_id, terminal_id FROM psams "
            "ORDER BY serial LIMIT 1"
        ).fetchone()
    return PsamOnFile(*row)


def psams_on_file(database: Path) -> list[PsamOnFile]:
    """Every PSAM, by institution, then serial."""
    with sqlite3.connect(database) as connection:
        rows = connection.execute(
            "SELECT serial, psam_terminal_no, institution_id, terminal_id FROM psams "
            "ORDER BY institution_id, serial"
        ).fetchall()
    return [PsamOnFile(*row) for row in rows]
