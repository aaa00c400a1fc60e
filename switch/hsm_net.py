"""The network HSM (IO): an asyncio server wrapping a SoftHsm, and a pipelined client that
implements the `hsm.interface.Hsm` port, speaking the payShield-style host protocol of
`hsm.hostcmd` (documented in specs/hsm-protocol.md).

Several switch processes may share one server; each client connection carries many requests in
flight, matched to responses by the 4-character header. The server answers one connection's
requests in order (the SoftHsm never waits, so that costs nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from hsm import hostcmd
from hsm.errors import HsmError, InvalidInputError
from hsm.interface import ExportedKey, Hsm, MacAlgorithm, OnlineTxn, PurchaseRecord, SignOnKeys
from hsm.keys import CardKeyPath, KeyRef, KeyUsage

log = logging.getLogger("medswitch.hsm")
INTERNAL_ERROR = "41"
READ_BYTES = 1 << 16


class HsmServer:
    def __init__(self, hsm: Hsm) -> None:
        self._hsm = hsm
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.StreamWriter] = set()

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen; returns the bound port (useful with port 0)."""
        self._server = await asyncio.start_server(self._serve, host, port)
        bound: int = self._server.sockets[0].getsockname()[1]
        log.info("hsm server listening", extra={"host": host, "port": bound})
        return bound

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._connections):
                writer.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections.add(writer)
        splitter = hostcmd.FrameSplitter()
        try:
            while True:
                try:
                    data = await reader.read(READ_BYTES)
                except ConnectionError:
                    return
                if not data:
                    return
                # Everything pipelined in this read is answered with one write.
                replies = [await self.handle(body) for body in splitter.feed(data)]
                writer.write(b"".join(replies))
                if writer.transport.get_write_buffer_size() > 1 << 20:
                    await writer.drain()
        finally:
            self._connections.discard(writer)
            writer.close()

    async def handle(self, body: bytes) -> bytes:
        """One request body (without its length) → one framed response."""
        header, code = body[:4].decode("ascii", "replace"), body[4:6].decode("ascii", "replace")
        try:
            header, command, args, kwargs = hostcmd.decode_request(body)
            result = await getattr(self._hsm, command.method)(*args, **kwargs)
            return hostcmd.encode_response(header, command, result)
        except HsmError as error:
            log.info("hsm command refused", extra={"command": code, "error": error.code})
            return hostcmd.encode_error(header, code, error)
        except Exception:  # never let one request kill the connection; no details leak
            log.exception("hsm command failed", extra={"command": code})
            failure = HsmError("internal error")
            failure.code = INTERNAL_ERROR
            return hostcmd.encode_error(header, code, failure)


class HsmClient:
    """The Hsm port over TCP. Requests are pipelined on one connection; each fails with
    TimeoutError if its answer takes longer than `timeout_s`, and with ConnectionError when the
    connection drops. The next request after a drop connects again (HSM operations are
    idempotent, so a caller may retry one that failed)."""

    def __init__(self, host: str, port: int, timeout_s: float = 5.0) -> None:
        self._address = (host, port)
        self._timeout_s = timeout_s
        self._loop = asyncio.get_running_loop()
        self._pending: dict[str, asyncio.Future[bytes]] = {}
        self._ids = itertools.cycle(range(10_000))
        self._writer: asyncio.StreamWriter | None = None
        self._receiver: asyncio.Task[None] | None = None
        self._connecting: asyncio.Lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"HsmClient({self._address[0]}:{self._address[1]}, {len(self._pending)} in flight)"

    @classmethod
    async def connect(cls, host: str, port: int, timeout_s: float = 5.0) -> HsmClient:
        client = cls(host, port, timeout_s)
        await client._open()
        return client

    async def _open(self) -> asyncio.StreamWriter:
        async with self._connecting:
            receiver, writer = self._receiver, self._writer
            if writer is not None and receiver is not None and not receiver.done():
                return writer
            reader, opened = await asyncio.wait_for(
                asyncio.open_connection(*self._address), self._timeout_s
            )
            self._writer = opened
            self._receiver = self._loop.create_task(self._receive(reader))
            return opened

    async def close(self) -> None:
        if self._writer is None or self._receiver is None:
            return
        self._writer.close()
        self._receiver.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await self._receiver
        with contextlib.suppress(ConnectionError):
            await self._writer.wait_closed()

    async def _receive(self, reader: asyncio.StreamReader) -> None:
        splitter = hostcmd.FrameSplitter()
        try:
            while True:
                data = await reader.read(READ_BYTES)
                if not data:
                    break
                for body in splitter.feed(data):
                    future = self._pending.pop(body[:4].decode("ascii", "replace"), None)
                    if future is not None and not future.done():
                        future.set_result(body)
        except ConnectionError:
            pass
        lost = ConnectionError("HSM connection lost")
        for future in self._pending.values():
            if not future.done():
                future.set_exception(lost)
        self._pending.clear()

    async def call(self, method: str, *args: Any, code: str | None = None) -> Any:
        command = hostcmd.BY_METHOD[method] if code is None else hostcmd.BY_CODE[code]
        writer = self._writer
        if writer is None or self._receiver is None or self._receiver.done():
            writer = await self._open()
        request = hostcmd.encode_request(self._next_header(), command.code, command.method, args)
        header = request[2:6].decode()
        future: asyncio.Future[bytes] = self._loop.create_future()
        self._pending[header] = future
        timer = self._loop.call_later(self._timeout_s, self._expire, header)
        writer.write(request)
        try:
            body = await future
        finally:
            timer.cancel()
        return hostcmd.decode_response(body, command)

    def _expire(self, header: str) -> None:
        future = self._pending.pop(header, None)
        if future is not None and not future.done():
            future.set_exception(TimeoutError("HSM did not answer in time"))

    def _next_header(self) -> str:
        for _ in range(10_000):
            header = f"{next(self._ids):04d}"
            if header not in self._pending:
                return header
        raise InvalidInputError("10000 requests in flight")

    # -- the Hsm port ---------------------------------------------------------------------------
    async def diagnostics(self) -> str:
        result: str = await self.call("diagnostics")
        return result

    async def generate_key(self, alias: str, usage: KeyUsage, *, now: datetime) -> KeyRef:
        result: KeyRef = await self.call("generate_key", alias, usage, now)
        return result

    async def import_key(
        self, alias: str, usage: KeyUsage, kek: KeyRef, encrypted: bytes, kcv: str, *,
        now: datetime,
    ) -> KeyRef:
        result: KeyRef = await self.call("import_key", alias, usage, kek, encrypted, kcv, now)
        return result

    async def export_key(self, key: KeyRef, kek: KeyRef) -> ExportedKey:
        result: ExportedKey = await self.call("export_key", key, kek)
        return result

    async def kcv(self, key: KeyRef | CardKeyPath) -> str:
        result: str = await self.call("kcv", key)
        return result

    async def generate_mac(self, key: KeyRef, algorithm: MacAlgorithm, data: bytes) -> bytes:
        result: bytes = await self.call("generate_mac", key, algorithm, data)
        return result

    async def verify_mac(
        self, key: KeyRef, algorithm: MacAlgorithm, data: bytes, mac: bytes
    ) -> bool:
        result: bool = await self.call("verify_mac", key, algorithm, data, mac)
        return result

    async def sign_on(
        self, tmk: KeyRef, layout: int, alias_prefix: str, *, now: datetime
    ) -> SignOnKeys:
        result: SignOnKeys = await self.call("sign_on", tmk, layout, alias_prefix, now)
        return result

    async def accept_sign_on(
        self, tmk: KeyRef, field62: bytes, alias_prefix: str, *, now: datetime
    ) -> SignOnKeys:
        result: SignOnKeys = await self.call("accept_sign_on", tmk, field62, alias_prefix, now)
        return result

    async def encrypt_data(self, key: KeyRef, data: bytes) -> bytes:
        result: bytes = await self.call("encrypt_data", key, data)
        return result

    async def decrypt_data(self, key: KeyRef, data: bytes) -> bytes:
        result: bytes = await self.call("decrypt_data", key, data)
        return result

    async def encrypt_personal(self, key: KeyRef, context: bytes, data: bytes) -> bytes:
        result: bytes = await self.call("encrypt_personal", key, context, data)
        return result

    async def decrypt_personal(self, key: KeyRef, context: bytes, sealed: bytes) -> bytes:
        result: bytes = await self.call("decrypt_personal", key, context, sealed)
        return result

    async def index_personal(self, key: KeyRef, data: bytes) -> bytes:
        result: bytes = await self.call("index_personal", key, data)
        return result

    async def translate_pin(
        self, source: KeyRef, destination: KeyRef, pin_block: bytes, pan: str
    ) -> bytes:
        code = "CC" if source.usage is KeyUsage.ZPK else "CA"
        result: bytes = await self.call(
            "translate_pin", source, destination, pin_block, pan, code=code
        )
        return result

    async def pin_reload_mac(
        self, reload_key: CardKeyPath, pin_key: KeyRef, pin_block: bytes, pan: str
    ) -> bytes:
        result: bytes = await self.call("pin_reload_mac", reload_key, pin_key, pin_block, pan)
        return result

    async def pin_unblock_command(
        self, unblock_key: CardKeyPath, pin_key: KeyRef, pin_block: bytes, pan: str,
        challenge: bytes, key_index: int = 0,
    ) -> bytes:
        result: bytes = await self.call(
            "pin_unblock_command", unblock_key, pin_key, pin_block, pan, challenge, key_index
        )
        return result

    async def verify_mac1(self, key: CardKeyPath, txn: OnlineTxn) -> bool:
        result: bool = await self.call("verify_mac1", key, txn)
        return result

    async def generate_mac2(self, key: CardKeyPath, txn: OnlineTxn, host_time: datetime) -> bytes:
        result: bytes = await self.call("generate_mac2", key, txn, host_time)
        return result

    async def verify_mac3(
        self, key: CardKeyPath, txn: OnlineTxn, new_balance_fen: int, host_time: datetime,
        mac3: bytes,
    ) -> bool:
        result: bool = await self.call("verify_mac3", key, txn, new_balance_fen, host_time, mac3)
        return result

    async def verify_load_tac(
        self, key: CardKeyPath, txn: OnlineTxn, new_balance_fen: int, host_time: datetime,
        tac: bytes,
    ) -> bool:
        result: bool = await self.call(
            "verify_load_tac", key, txn, new_balance_fen, host_time, tac
        )
        return result

    async def generate_purchase_mac1(
        self, key: CardKeyPath, record: PurchaseRecord, rnd: bytes, offline_ctr: int
    ) -> bytes:
        result: bytes = await self.call("generate_purchase_mac1", key, record, rnd, offline_ctr)
        return result

    async def verify_purchase_mac2(
        self, key: CardKeyPath, record: PurchaseRecord, rnd: bytes, offline_ctr: int,
        mac2: bytes,
    ) -> bool:
        result: bool = await self.call(
            "verify_purchase_mac2", key, record, rnd, offline_ctr, mac2
        )
        return result

    async def verify_purchase_tac(
        self, key: CardKeyPath, record: PurchaseRecord, tac: bytes
    ) -> bool:
        result: bool = await self.call("verify_purchase_tac", key, record, tac)
        return result

    async def verify_purchase_tacs(
        self, items: Sequence[tuple[CardKeyPath, PurchaseRecord, bytes]]
    ) -> list[bool]:
        """Pipelined W6 commands on the one connection (the protocol has no batch command)."""
        calls = [self.verify_purchase_tac(key, record, tac) for key, record, tac in items]
        return list(await asyncio.gather(*calls))

    async def script_mac(
        self, key: CardKeyPath, challenge: bytes, command: bytes, sequence: int = 0
    ) -> bytes:
        result: bytes = await self.call("script_mac", key, challenge, command, sequence)
        return result

    async def write_card_key(
        self, control: CardKeyPath, key: CardKeyPath, challenge: bytes, header: bytes,
        attributes: bytes,
    ) -> bytes:
        result: bytes = await self.call(
            "write_card_key", control, key, challenge, header, attributes
        )
        return result

    async def write_psam_key(
        self, transport: CardKeyPath, key: KeyRef, challenge: bytes, header: bytes,
        attributes: bytes,
    ) -> bytes:
        result: bytes = await self.call(
            "write_psam_key", transport, key, challenge, header, attributes
        )
        return result

    async def card_data_check_code(self, key: CardKeyPath, data: bytes) -> bytes:
        result: bytes = await self.call("card_data_check_code", key, data)
        return result

    async def verify_card_data_check_code(
        self, key: CardKeyPath, data: bytes, code: bytes
    ) -> bool:
        result: bool = await self.call("verify_card_data_check_code", key, data, code)
        return result

    async def sign(self, key: KeyRef, message: bytes) -> bytes:
        result: bytes = await self.call("sign", key, message)
        return result

    async def public_key(self, key: KeyRef) -> bytes:
        result: bytes = await self.call("public_key", key)
        return result


# -- `medswitch hsm serve` ---------------------------------------------------------------------
