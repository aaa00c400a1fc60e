"""A POS's and a kiosk's envelope over the terminal interface (specs/terminal-interface.md) and
a hospital's bill through the HIS API (specs/his-api.yaml), for the contract suites that drive
`make run`'s daemon. Imports nothing of medswitch."""

from __future__ import annotations

import base64
import json
import urllib.request
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from tests.contract.daemon import Deployment, Link
from tests.contract.wire import Frame, WorkingKeys, check_mac, encode, sign_on_keys

CENTRE_ZONE = ZoneInfo("Asia/Shanghai")  # spec: "Identifiers, amounts and clocks"


class Terminal:
    """A terminal's envelope: F41, F42 (padded with spaces to 15), STAN, batch, working keys."""

    def __init__(self, port: int, terminal_id: str, institution: str, tmk: bytes) -> None:
        self.link = Link(port)
        self.terminal_id, self.institution, self.tmk = terminal_id, institution, tmk
        self.stan = 0
        self.batch = "000000"
        self.keys: WorkingKeys | None = None

    def envelope(self, type_code: str, network: str) -> dict[int, str]:
        self.stan += 1
        return {11: f"{self.stan:06d}", 41: self.terminal_id, 42: self.institution.ljust(15),
                60: type_code + self.batch + network}

    def sign_on(self) -> Frame:
        reply = self.link.exchange(encode("0800", self.envelope("00", "004"), None))
        assert reply.mti == "0810" and reply.fields[39] == "00", reply.fields
        self.keys = sign_on_keys(self.tmk, reply.fields[62])
        check_mac(reply, self.keys.mak)
        self.batch = reply.fields[60][2:8]
        assert len(reply.fields[12]) == 6 and len(reply.fields[13]) == 4  # the centre's clock
        return reply

    def send(self, mti: str, fields: dict[int, str], type_code: str, network: str = "000",
             expect: str = "00") -> Frame:
        assert self.keys is not None
        request = {**self.envelope(type_code, network), **fields}
        reply = self.link.exchange(encode(mti, request, self.keys.mak))
        assert reply.mti == f"{int(mti) + 10:04d}", reply.mti
        check_mac(reply, self.keys.mak)
        assert reply.fields[39] == expect, (mti, type_code, reply.fields)
        for echoed in (11, 41, 42):
            assert reply.fields[echoed] == request[echoed], f"F{echoed} not echoed"
        return reply


def card_datetime(now: datetime) -> bytes:
    return bytes.fromhex(now.astimezone(CENTRE_ZONE).strftime("%Y%m%d%H%M%S"))


CONTRACT_LINES = ({"code": "A02", "quantity": 1, "unit_price_fen": 500},
                  {"code": "A01", "quantity": 2, "unit_price_fen": 1000})


def his_submit(deployment: Deployment, institution: str, card_no: str,
               bill_no: str = "CONTRACT-1",
               lines: tuple[dict[str, Any], ...] = CONTRACT_LINES) -> dict[str, Any]:
    """POST /his/v1/bills as the institution (201 expected): the stored bill with its split."""
    body = {
        "his_bill_no": bill_no,
        "card_no": card_no,
        "service_date": datetime.now(CENTRE_ZONE).date().isoformat(),
        "lines": list(lines),
    }
    token = base64.b64encode(f"{institution}:{deployment.his_token(institution)}".encode())
    request = urllib.request.Request(
        f"http://127.0.0.1:{deployment.http_port}/his/v1/bills",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Basic {token.decode()}"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=15) as answer:
        assert answer.status == 201
        return dict(json.loads(answer.read()))
