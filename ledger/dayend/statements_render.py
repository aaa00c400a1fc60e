"""Party statements as CSV and as a readable HTML page (pure, byte-deterministic: no clock, no
random; rows come sorted from the statement). Amounts are kept in fen in the statement and shown
in yuan with two decimals; a column whose name ends in ``_fen`` is such an amount.

>>> s = PartyStatement("institution", "h1", "第1医院", "2026-11-01", "2026-11-30",
...     (Section("Settled", ("what", "count", "amount_fen"), (("card ED", 2, 1234),)),))
>>> print(render_csv(s).decode().strip())
statement,institution,h1,第1医院,2026-11-01,2026-11-30
<BLANKLINE>
section,Settled
what,count,amount (yuan)
card ED,2,12.34
>>> b"<td class=\\"n\\">12.34</td>" in render_html(s)
True
"""

from __future__ import annotations

import csv
import html
import io
from dataclasses import dataclass

from ledger.medical.split import yuan

Cell = str | int


@dataclass(frozen=True)
class Section:
    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]
    note: str = ""


@dataclass(frozen=True)
class PartyStatement:
    kind: str  # institution | unit
    party_id: str
    party_name: str
    date_from: str
    date_to: str
    sections: tuple[Section, ...]

    @property
    def stem(self) -> str:
        """The files' name without extension."""
        return f"{self.kind}_{self.party_id}_{self.date_from}_{self.date_to}"


def _header(column: str) -> str:
    if column.endswith("_fen"):
        return column[: -len("_fen")].replace("_", " ") + " (yuan)"
    return column.replace("_", " ")


def _cells(section: Section, row: tuple[Cell, ...]) -> list[str]:
    return [
        yuan(value) if name.endswith("_fen") and isinstance(value, int) else str(value)
        for name, value in zip(section.columns, row, strict=True)
    ]


def render_csv(statement: PartyStatement) -> bytes:
    """UTF-8 CSV, LF line ends: a title row, then each section (title, header, rows)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    s = statement
    writer.writerow(["statement", s.kind, s.party_id, s.party_name, s.date_from, s.date_to])
    for section in s.sections:
        writer.writerow([])
        writer.writerow(["section", section.title] + ([section.note] if section.note else []))
        writer.writerow([_header(c) for c in section.columns])
        for row in section.rows:
            writer.writerow(_cells(section, row))
    return out.getvalue().encode("utf-8")


_STYLE = (
    "body{font-family:sans-serif;margin:2em;color:#222}"
    "table{border-collapse:collapse;margin:0 0 1.5em}"
    "th,td{border:1px solid #bbb;padding:.25em .6em}th{background:#eee;text-align:left}"
    "td.n{text-align:right;font-variant-numeric:tabular-nums}p.note{color:#555}"
)


def render_html(statement: PartyStatement) -> bytes:
    """A standalone HTML page with one table per section."""
    s = statement
    e = html.escape
    what = "Institution" if s.kind == "institution" else "Employer unit"
    title = f"{what} statement {s.party_id} {s.party_name}, {s.date_from} – {s.date_to}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="zh"><head><meta charset="utf-8">',
        f"<title>{e(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{e(title)}</h1>",
        "<p>Amounts in yuan (CNY). Business dates close at the centre's cut-over.</p>",
    ]
    for section in s.sections:
        parts.append(f"<h2>{e(section.title)}</h2>")
        if section.note:
            parts.append(f'<p class="note">{e(section.note)}</p>')
        parts.append("<table><tr>" + "".join(f"<th>{e(_header(c))}</th>" for c in section.columns))
        parts[-1] += "</tr>"
        for row in section.rows:
            cells = []
            for value, text in zip(row, _cells(section, row), strict=True):
                klass = ' class="n"' if isinstance(value, int) else ""
                cells.append(f"<td{klass}>{e(text)}</td>")
            parts.append("<tr>" + "".join(cells) + "</tr>")
        if not section.rows:
            parts.append(f'<tr><td colspan="{len(section.columns)}">none</td></tr>')
        parts.append("</table>")
    parts.append("</body></html>")
    return ("\n".join(parts) + "\n").encode("utf-8")
