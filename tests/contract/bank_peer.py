"""A bank host's side of specs/bank-interface.md, written from the spec alone
(`bank_codec.py` encodes its messages by hand). Two roles: the bank's counters (a client of the
centre's inbound link) and the bank as savings issuer (a server the centre's outbound link
connects to). Imports nothing of medswitch."""

from __future__ import annotations

import queue
import socket
import threading
from dataclasses import dataclass, field

from tests.contract.bank_codec import (
    Dialect,
    Msg,
    Stream,
    Value,
    decode,
    encode,
    frame,
    gmt_now,
    mac_verifies,
    pin_of,
    sealed,
)
from tests.contract.bank_keys import Offered, take
from tests.contract.bank_keys import kcv as kcv_of

REPLY_S = 15.0


# -- the bank's counters: a client of the centre's inbound link -----------------------------


class Counter:
    def __init__(self, dialect: Dialect, port: int, bank_id: str, zak: bytes) -> None:
        self.dialect, self.bank_id, self.zak = dialect, bank_id, zak
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=REPLY_S)
        self.stream = Stream(dialect, self.sock)
        self.stan = 0

    def envelope(self) -> dict[int, Value]:
        self.stan += 1
        return {7: gmt_now(), 11: f"{self.stan:06d}", 32: self.bank_id, 41: "CTR00001",
                42: "BRANCH000000001"}

    def exchange(self, mti: str, fields: dict[int, Value], *, mac: bool = True,
                 zak: bytes | None = None) -> Msg:
        """A request MACed under the counter's ZAK (or ``zak``, when given) unless not ``mac``;
        the centre's reply."""
        request = {**self.envelope(), **fields}
        payload = (sealed(self.dialect, zak or self.zak, mti, request) if mac
                   else encode(self.dialect, mti, request))
        self.sock.sendall(frame(self.dialect, payload))
        return self.reply_to(mti, request, mac=mac, zak=zak)

    def send(self, mti: str, fields: dict[int, Value]) -> dict[int, Value]:
        """A request sent as it is (no MAC, no check of the answer): the fields sent."""
        request = {**self.envelope(), **fields}
        self.sock.sendall(frame(self.dialect, encode(self.dialect, mti, request)))
        return request

    def reply_to(self, mti: str, request: dict[int, Value], *, mac: bool,
                 zak: bytes | None = None) -> Msg:
        raw = self.stream.read()
        assert raw is not None, "the centre closed the connection"
        reply = decode(self.dialect, raw)
        assert reply.mti == f"{int(mti) // 10 * 10 + 10:04d}", reply.mti
        for n in (7, 11, 32):
            assert reply.fields.get(n) == request[n], f"F{n} not echoed"
        policy = self.dialect.network_mac if mti.startswith("08") else self.dialect.request_mac
        if mac and policy == "none":  # spec: a MAC neither checked nor sent by the centre
            assert not {64, 128} & set(reply.fields), f"{reply.mti}: MACed under none"
        elif mac and reply.fields.get(39) != "A0":  # spec: a reply to a MAC that verified
            # carries its own, under the key the request verified with (an A0 is not MACed)
            assert mac_verifies(self.dialect, zak or self.zak, reply), f"{reply.mti}: bad F128"
        return reply

    def close(self) -> None:
        self.sock.close()


# -- the bank as savings issuer: the centre's outbound link connects here --------------------


@dataclass
class Issuer:
    dialect: Dialect
    zak: bytes  # the outbound link's ZAK
    zpk: bytes  # the outbound link's ZPK
    pin: str  # the cardholder's PIN the bank knows
    bank_id: str
    hold_debits: bool = False  # take debits but never answer (the centre times out)
    mac_network: bool = True  # MAC 0810s when network_mac is required (False: a bank that
    # does not, whose answers the centre must drop)
    zmk: bytes | None = None  # the link's ZMK: the bank takes the centre's key changes
    stan: int = 0  # the bank's own requests on the centre's connection
    requests: queue.Queue[Msg] = field(default_factory=queue.Queue)
    responses: queue.Queue[Msg] = field(default_factory=queue.Queue)
    changes: queue.Queue[Offered] = field(default_factory=queue.Queue)  # key changes taken
    _conn: socket.socket | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:  # closed
                return
            self._conn = conn
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        stream = Stream(self.dialect, conn)
        with conn:
            while (raw := stream.read()) is not None:
                msg = decode(self.dialect, raw)
                if int(msg.mti[2]) % 2:
                    self.responses.put(msg)
                    continue
                self.requests.put(msg)
                answer = self._answer(msg)
                if answer is not None:
                    with self._lock:
                        conn.sendall(frame(self.dialect, answer))

    def _answer(self, msg: Msg) -> bytes | None:
        echoed = {n: v for n, v in msg.fields.items() if n in (2, 3, 4, 7, 11, 32, 70, 90)}
        reply_mti = f"{int(msg.mti) // 10 * 10 + 10:04d}"
        if msg.mti == "0800" and msg.fields.get(70) == "101":
            return self._key_change(msg, reply_mti, echoed)
        if msg.mti == "0800":  # network management: MACed both ways only when required
            if self.dialect.network_mac != "required":
                return encode(self.dialect, reply_mti, {**echoed, 39: "00"})
            code = "00" if mac_verifies(self.dialect, self.zak, msg) else "A0"
            if not self.mac_network:
                return encode(self.dialect, reply_mti, {**echoed, 39: code})
            return sealed(self.dialect, self.zak, reply_mti, {**echoed, 39: code})
        if not self._request_mac_ok(msg):
            return encode(self.dialect, reply_mti, {**echoed, 39: "A0"})
        code = "00"
        if msg.mti == "0200":
            block = msg.fields[52]
            assert isinstance(block, bytes)
            code = "00" if pin_of(block, msg.text(2), self.zpk) == self.pin else "55"
            if self.hold_debits:
                return None
        if self.dialect.response_mac == "none":  # this bank MACs no response
            return encode(self.dialect, reply_mti, {**echoed, 39: code})
        return sealed(self.dialect, self.zak, reply_mti, {**echoed, 39: code})

    def _request_mac_ok(self, msg: Msg) -> bool:
        """The dialect's request_mac: required, optional (verified when there) or none."""
        policy = self.dialect.request_mac
        if policy == "none" or (policy == "optional" and not {64, 128} & set(msg.fields)):
            return True
        return mac_verifies(self.dialect, self.zak, msg)

    def _key_change(self, msg: Msg, reply_mti: str, echoed: dict[int, Value]) -> bytes:
        """The centre's key change (spec: F48, "Key exchange"): MACed under the current ZAK,
        the keys under the ZMK with their KCVs; answered 00 with the KCVs under the same ZAK,
        and the new ZAK and ZPK serve from the next message on."""
        assert self.zmk is not None, "this bank takes no key change"
        if not mac_verifies(self.dialect, self.zak, msg):
            return encode(self.dialect, reply_mti, {**echoed, 39: "A0"})
        offered = take(self.zmk, msg.text(48))
        kcvs = {usage: kcv_of(key) for usage, key in offered.keys.items()}
        if kcvs != offered.kcvs:
            return sealed(self.dialect, self.zak, reply_mti, {**echoed, 39: "89"})
        data = ";".join(f"{usage}={check}" for usage, check in kcvs.items())
        reply = sealed(self.dialect, self.zak, reply_mti, {**echoed, 39: "00", 48: data})
        self.zak, self.zpk = offered.keys["ZAK"], offered.keys.get("ZPK", self.zpk)
        self.changes.put(offered)
        return reply

    def request(self, mti: str, fields: dict[int, Value], *, mac: bool = False,
                zak: bytes | None = None) -> Msg:
        """The bank's own request on the centre's outbound connection (MACed under ``zak``
        when given, else under its current ZAK when ``mac``); the centre's answer (its F7, F11
        and F32 checked to echo the request's)."""
        assert self._conn is not None, "the centre has not connected"
        self.stan += 1
        request = {7: gmt_now(), 11: f"{900000 + self.stan:06d}", 32: self.bank_id, **fields}
        mac = mac or zak is not None
        payload = (sealed(self.dialect, zak or self.zak, mti, request) if mac
                   else encode(self.dialect, mti, request))
        with self._lock:
            self._conn.sendall(frame(self.dialect, payload))
        reply = self.responses.get(timeout=REPLY_S)
        assert reply.mti == f"{int(mti) // 10 * 10 + 10:04d}", reply.mti
        for n in (7, 11, 32):
            assert reply.fields.get(n) == request[n], f"F{n} not echoed"
        if mac and reply.fields[39] != "A0":  # spec: a reply to a MAC that verified has one
            assert mac_verifies(self.dialect, zak or self.zak, reply), f"{reply.mti}: bad MAC"
        return reply

    def send(self, mti: str, fields: dict[int, Value], *, zak: bytes | None = None,
             cut: int = 0) -> None:
        """A message on the centre's outbound connection expecting nothing: MACed under
        ``zak`` when given, its last ``cut`` bytes left off (in its frame)."""
        assert self._conn is not None, "the centre has not connected"
        self.stan += 1
        message = {7: gmt_now(), 11: f"{900000 + self.stan:06d}", 32: self.bank_id, **fields}
        payload = (encode(self.dialect, mti, message) if zak is None
                   else sealed(self.dialect, zak, mti, message))
        with self._lock:
            self._conn.sendall(frame(self.dialect, payload[: len(payload) - cut]))

    def echo(self) -> Msg:
        """The bank's own echo on the centre's outbound connection (MACed when the dialect
        requires it of network management)."""
        return self.request("0800", {70: "301"}, mac=self.dialect.network_mac == "required")

    def next_request(self, mti_prefix: str, timeout_s: float = REPLY_S) -> Msg:
        """The next request the centre sent whose MTI starts with ``mti_prefix``."""
        for _ in range(int(timeout_s / 0.5) + 1):
            try:
                msg = self.requests.get(timeout=0.5)
            except queue.Empty:
                continue
            if msg.mti.startswith(mti_prefix):
                return msg
        raise AssertionError(f"no {mti_prefix}xx request from the centre")

    def close(self) -> None:
        self.server.close()
        if self._conn is not None:
            self._conn.close()
