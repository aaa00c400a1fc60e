"""Markdown tables of an interface's fields and transactions, generated from the code tables.

``specs/*.md`` embed these between ``<!-- generated: NAME -->`` and ``<!-- end -->`` markers;
``tests/messages/test_specdoc.py`` checks they are current, and
``python -m messages.specdoc`` rewrites them.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable
from pathlib import Path

from messages import bank, terminal_table
from messages.binding import Bind
from messages.fieldspec import InterfaceSpec
from messages.outcome import Outcome
from messages.private import BillData, CardData, TerminalParameters
from messages.spec_bank import BANK
from messages.spec_terminal import TERMINAL
from messages.terminal import _ENVELOPE, _REPLY
from messages.terminal_actions import TERMINAL_ACTIONS, meaning
from messages.tlv import Tag, TagKind


def field_table(interface: InterfaceSpec) -> str:
    encoding = "BCD" if interface.encoding.value == "bcd" else "ASCII"
    lines = ["| F | name | format | length prefix | wiped in logs |", "|---|---|---|---|---|"]
    for number, spec in sorted(interface.fields.items()):
        prefix = "—" if not int(spec.var) else f"{encoding} {'LL' if int(spec.var) == 2 else 'LLL'}"
        lines.append(
            f"| {number} | {spec.name} | {spec.format} | {prefix} | "
            f"{'yes' if spec.sensitive else ''} |"
        )
    return "\n".join(lines)


def _fields(binds: Iterable[Bind]) -> str:
    return ", ".join(f"{b.field}{'' if b.required else '?'}" for b in binds)


def terminal_transactions() -> str:
    lines = [
        "| transaction | MTI | F3 | F25 | 60.1 | 60.3 | request fields | reply | reversible |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row, request, reply in terminal_table.TABLE:
        lines.append(
            f"| {row.name}: {row.description} | {row.mti}/{row.response_mti} | "
            f"{row.processing_code or '—'} | {row.condition_code or '—'} | {row.txn_type} | "
            f"{row.network_code} | {_fields((*_ENVELOPE, *request.BINDS))}, 60 | "
            f"{reply.__name__}: {_fields(reply.BINDS[len(_REPLY) :]) or 'common'} | "
            f"{'yes' if row.reversible else ''} |"
        )
    return "\n".join(lines)


def bank_transactions() -> str:
    lines = [
        "| transaction | MTI | F3 | F25 | F70 | request fields | reversible |",
        "|---|---|---|---|---|---|---|",
    ]
    for row, request in bank.TABLE:
        lines.append(
            f"| {row.name}: {row.description} | {row.mti}/{row.response_mti} | "
            f"{row.processing_code or '—'} | {row.condition_code or '—'} | "
            f"{row.network_code or '—'} | {_fields((*bank._ENVELOPE, *request.BINDS))} | "
            f"{'yes' if row.reversible else ''} |"
        )
    return "\n".join(lines)


def tlv_table(layout: tuple[Tag, ...]) -> str:
    lines = ["| tag | element | type | bytes |", "|---|---|---|---|"]
    for tag in layout:
        size = str(tag.size) if tag.size else "≤ 255"
        if tag.kind is TagKind.CHAINED:
            size = "any (≤ 255 an element)"
        lines.append(f"| {tag.tag:02X} | {tag.name} | {tag.kind.value} | {size} |")
    return "\n".join(lines)


def response_codes() -> str:
    lines = ["| F39 | outcome | what the terminal does |", "|---|---|---|"]
    lines += [f"| {o.code} | {meaning(o)} | {TERMINAL_ACTIONS[o]} |" for o in Outcome]
    return "\n".join(lines)


SECTIONS = {
    "card-data": lambda: tlv_table(CardData.LAYOUT),
    "bill-data": lambda: tlv_table(BillData.LAYOUT),
    "parameters": lambda: tlv_table(TerminalParameters.LAYOUT),
    "response-codes": response_codes,
    "terminal-fields": lambda: field_table(TERMINAL),
    "terminal-transactions": terminal_transactions,
    "bank-fields": lambda: field_table(BANK),
    "bank-transactions": bank_transactions,
}
_MARKED = re.compile(r"(<!-- generated: ([a-z-]+) -->\n)(.*?)(<!-- end -->)", re.DOTALL)


def refresh(text: str) -> str:
    """``text`` with every generated section replaced by its current table."""
    return _MARKED.sub(lambda m: m.group(1) + SECTIONS[m.group(2)]() + "\n" + m.group(4), text)


def main(paths: list[str]) -> None:  # pragma: no cover - a developer's tool
    for path in paths:
        file = Path(path)
        file.write_text(refresh(file.read_text(encoding="utf-8")), encoding="utf-8")


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:] or ["specs/terminal-interface.md", "specs/bank-interface.md"])
