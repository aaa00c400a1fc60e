"""The load generator of medical settlements: N signed-on POS terminals each settle HIS bills
(0200, the bill under the TDK) and confirm the card's debit (0220 with its TAC), against a real
`medswitch serve` on the embedded SQLite default, next to a raw loopback echo and raw pyiso8583
decode+encode measured in the same run.

    python -m bench.bench_settle [--terminals 20] [--bills 2400] [--cardholders 120] [--no-pin]
                                 [--card-book]

The generator runs on one core and the daemon and the echo server on the other (``--no-pin``:
wherever the scheduler puts them), as a load test would run its generator elsewhere:
:func:`bench.bench_switch.cores` says why.

Everything a terminal would compute — cards loaded and confirmed at a kiosk (so the ED
shadows hold what the cards hold and no debit goes to review), cards' purchases through their
PSAMs, MACs, TDK encryption — and the bills, submitted to the daemon's HIS API as the
hospitals' charging systems submit them, are done before the timed phase, with the same
simulators and HSM code, so the timed phase measures the switch: decode, checks, MAC, the
medical core, the HSM's TAC check, the ledger's group commit, encode.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple

import aiohttp
import iso8583
import uvloop

from bench.bench_switch import Client, CpuMeter, children, cores, processes, report
from bench.pos_side import CODEC, Lanes, Pos, exchange, peek, sign_on, signed
from hsm.keys import KeyRef, KeyUsage
from hsm.soft import SoftHsm
from ledger.demo import init_demo
from ledger.medical.bills import Submission
from ledger.medical.codec import bill_to_dict
from ledger.medical.split import Bill, BillLine
from messages.private import BillData, CardData
from messages.spec_terminal import TERMINAL
from messages.terminal import (
    DebitAdvice,
    EdLoad,
    EdLoadConfirm,
    Settlement,
)
from messages.terminal_table import parse
from routing.cardkeys import card_master_alias
from simulators import terminal_card
from simulators.factory import ChipMaker
from simulators.his import HisClient
from switch.card_io.connection import CardConnection
from switch.card_io.personalize import CardMasterKeys
from switch.demo import keys as demo_keys
from switch.demo import medical as demo_medical
from switch.demo.keys import demo_personal_keys
from switch.key_home import component_files_of, open_soft_hsm

PIN = "123456"
BILL_FEN = 1_000  # one outpatient visit: below the deductible, all from the personal account
SUBMITTING = 8  # bills submitted at a time while preparing
U = KeyUsage


class Submitted(NamedTuple):
    """What the lanes need of a submitted bill."""

    bill_id: str
    personal_account_fen: int


Submit = Callable[[str, Submission], Awaitable[Submitted]]


async def build_lanes(
    port: int,
    hsm: SoftHsm,
    maker: ChipMaker,
    cards: Sequence[tuple[str, str]],
    psams: Sequence[tuple[str, str, str, str]],
    submit: Submit,
    bills: int,
    now: dt.datetime,
    card_book: bool = False,
) -> Lanes:
    """Each card issued and loaded at a kiosk, a PSAM in each POS, `bills` bills submitted, and
    every POS's settlement and advice frames built: the lanes of (payload, STAN) per POS. With
    ``card_book`` each settlement carries the card's challenge and the visit's department and
    diagnoses, so the centre makes, seals and keeps a visit record and answers its script
    (specs/card-layout.md) — the record book's cost on the settlement path."""
    kiosk = Pos("K0000001", "centre", psam=None)  # type: ignore[arg-type]
    await sign_on(port, hsm, kiosk)
    assert kiosk.keys is not None
    bills_per_card = -(-bills // len(cards))
    chips: list[tuple[str, bytes, CardConnection]] = []
    for card_no, serial_hex in cards:
        serial = bytes.fromhex(serial_hex).rjust(10, b"\0")
        conn = await maker.card(hsm, _card_master_keys(), serial, card_no, PIN)
        terminal_card.open_application(conn, PIN)
        amount = BILL_FEN * bills_per_card
        start = terminal_card.initialize_load(conn, serial, amount, bytes(5) + b"\x01")
        load = EdLoad(**kiosk.envelope(), pan=card_no, amount_fen=amount, card=start)
        reply = parse(CODEC.decode(await exchange(port, await signed(hsm, kiosk.keys, load))))
        assert reply.card is not None and reply.card.mac2 and reply.card.card_datetime, reply
        tac = terminal_card.credit_for_load(conn, reply.card.card_datetime, reply.card.mac2)
        done = replace(  # the confirmation with the card's TAC credits the ED shadow
            start,
            tac=tac,
            new_balance_fen=terminal_card.balance(conn),
            card_datetime=reply.card.card_datetime,
        )
        confirm = EdLoadConfirm(**kiosk.envelope(), pan=card_no, amount_fen=amount, card=done)
        confirmed = parse(
            CODEC.decode(await exchange(port, await signed(hsm, kiosk.keys, confirm)))
        )
        assert confirmed.response_code == "00", confirmed
        chips.append((card_no, serial, conn))
    terminals = []
    for serial_hex, terminal_no, institution, terminal_id in psams:
        psam = await maker.psam(
            hsm,
            KeyRef(card_master_alias(U.MK_PURCHASE), 1, U.MK_PURCHASE),
            bytes.fromhex(serial_hex).rjust(10, b"\0"),
            bytes.fromhex(terminal_no),
        )
        pos = Pos(terminal_id, institution, psam)
        await sign_on(port, hsm, pos)
        terminals.append(pos)
    lanes: list[list[tuple[bytes, bytes]]] = [[] for _ in terminals]
    records = await submit_all(submit, terminals, [c[0] for c in chips], bills, now.date())
    for number, record in enumerate(records):
        pos = terminals[number % len(terminals)]
        card_no, serial, conn = chips[number % len(chips)]
        assert pos.keys is not None and pos.keys.tdk is not None
        bill = await hsm.encrypt_data(pos.keys.tdk, BillData(bill_id=record.bill_id).build())
        asked, card = bill, CardData()
        if card_book:
            visit = BillData(bill_id=record.bill_id, department="IM", diagnoses="J45.9,I10")
            asked = await hsm.encrypt_data(pos.keys.tdk, visit.build())
            card = CardData(challenge=number.to_bytes(4, "big"))
        settle = Settlement(
            **pos.envelope(),
            pan=card_no,
            amount_fen=BILL_FEN,
            card=card,
            bill=asked,
        )
        lanes[number % len(terminals)].append(
            (await signed(hsm, pos.keys, settle), f"{pos.stan:06d}".encode())
        )
        terminal_card.open_application(conn, PIN)
        data = terminal_card.purchase(
            conn, pos.psam, serial, record.personal_account_fen, now.replace(tzinfo=None)
        )
        advice = DebitAdvice(
            **pos.envelope(), pan=card_no, amount_fen=data.amount_fen or 0, card=data, bill=bill
        )
        lanes[number % len(terminals)].append(
            (await signed(hsm, pos.keys, advice), f"{pos.stan:06d}".encode())
        )
    return lanes


async def submit_all(
    submit: Submit, terminals: Sequence[Pos], cards: Sequence[str], bills: int, day: dt.date
) -> list[Submitted]:
    """Bill ``n`` on card ``n`` (cyclically) at POS ``n``'s institution, a few at a time."""
    limit = asyncio.Semaphore(SUBMITTING)

    async def one(number: int) -> Submitted:
        bill = Bill((BillLine("A01", 1, BILL_FEN),))
        submission = Submission(f"B{number:07d}", cards[number % len(cards)], day, bill)
        async with limit:
            return await submit(terminals[number % len(terminals)].institution_id, submission)

    return list(await asyncio.gather(*(one(n) for n in range(bills))))


async def prepare(
    home: Path,
    port: int,
    http_port: int,
    maker: ChipMaker,
    args: argparse.Namespace,
    card_book: bool = False,
) -> tuple[Lanes, int]:
    """Cards issued and loaded, PSAMs in the POS, bills submitted to the daemon's HIS API (as
    the hospitals' charging systems submit them, so the daemon's writer has each bill as it
    wrote it when its settlement comes), and every terminal's settlement and advice frames
    built; returns the lanes of (payload, STAN) and the cards."""
    hsm = open_soft_hsm(home, component_files_of(demo_keys.custodian_files(home)))
    now = demo_keys._now()
    database = home / "medswitch.db"
    with sqlite3.connect(database) as connection:
        cards = connection.execute(
            "SELECT card_no, application_serial FROM cards ORDER BY card_no"
        ).fetchall()
        psams = connection.execute(
            "SELECT p.serial, p.psam_terminal_no, p.institution_id, p.terminal_id FROM psams p "
            "ORDER BY p.serial LIMIT ?",
            (args.terminals,),
        ).fetchall()
    async with aiohttp.ClientSession() as session:
        submit = his_submit(session, http_port, home)
        lanes = await build_lanes(
            port, hsm, maker, cards, psams, submit, args.bills, now, card_book
        )
    return lanes, len(cards)


def his_submit(session: aiohttp.ClientSession, http_port: int, home: Path) -> Submit:
    """Bills submitted to the daemon's HIS API on ``http_port``, each by its institution's
    client with the token the home's credentials file holds."""
    url = f"http://127.0.0.1:{http_port}"
    clients = {
        institution: HisClient(session, url, institution, token)
        for institution, token in his_credentials(home).items()
    }

    async def submit(institution: str, submission: Submission) -> Submitted:
        bill = await clients[institution].submit(bill_body(submission))
        return Submitted(bill["bill_id"], bill["split"]["personal_account_fen"])

    return submit


def his_credentials(home: Path) -> dict[str, str]:
    """Each institution's HIS token, from the file `demo_medical.provision` wrote."""
    text = (home / demo_medical.CREDENTIALS_FILE).read_text()
    pairs = (line.split() for line in text.splitlines() if line and not line.startswith("#"))
    return {institution: token for institution, token in pairs}


def bill_body(submission: Submission) -> dict[str, Any]:
    """``submission`` as the HIS API's JSON body."""
    bill = {k: v for k, v in bill_to_dict(submission.bill).items() if v is not None}
    return {
        "his_bill_no": submission.his_bill_no,
        "card_no": submission.card_no,
        "service_date": submission.service_date.isoformat(),
        **bill,
    }


def demo_home(home: Path, cardholders: int) -> ChipMaker:
    """The demo deployment in ``home`` — database, keys, terminals provisioned, the medical
    reference data, a configuration on port 0 — and the card factory its cards are made with."""
    database = home / "medswitch.db"
    init_demo(database, cardholders, personal=asyncio.run(demo_personal_keys(home)))
    with sqlite3.connect(database) as connection:
        terminals = [r[0] for r in connection.execute("SELECT id FROM terminals")]
    files = demo_keys.write_test_components(home)
    hsm = open_soft_hsm(home, component_files_of(files))
    maker = uvloop.run(ChipMaker.form(hsm, "card/", demo_keys._now()))
    uvloop.run(demo_keys.provision(home, terminals))
    demo_medical.provision(home, database, dt.datetime.now(dt.UTC))
    demo_keys.write_config(home, terminal_port=0, http_port=0)
    return maker


def _card_master_keys() -> CardMasterKeys:
    def ref(usage: KeyUsage) -> KeyRef:
        return KeyRef(card_master_alias(usage), 1, usage)

    return CardMasterKeys(
        control=ref(U.MK_CONTROL),
        load=ref(U.MK_LOAD),
        purchase=ref(U.MK_PURCHASE),
        tac=ref(U.MK_TAC),
        unload=ref(U.MK_UNLOAD),
        pin_reload=ref(U.MK_PIN_RELOAD),
        pin_unblock=ref(U.MK_PIN_UNBLOCK),
        app_maint=ref(U.MK_APP_MAINT),
        data_check=KeyRef(demo_keys.centre_alias(U.DATA_CHECK), 1, U.DATA_CHECK),
    )


async def drive_once(port: int, lanes: Lanes) -> tuple[float, list[float], dict[str, int]]:
    """Each lane sends its frames in order, one outstanding; exchanges/s, latencies, and the
    response codes seen."""
    clients = [
        Client(*await asyncio.open_connection("127.0.0.1", port), stan_of=_stan) for _ in lanes
    ]
    latencies: list[float] = []
    codes: dict[str, int] = {}

    async def lane(client: Client, frames: list[tuple[bytes, bytes]]) -> None:
        for payload, stan in frames:
            started = time.perf_counter()
            answer = await client.request(payload, stan)
            latencies.append(time.perf_counter() - started)
            code = peek(answer).get(39, b"").decode()
            codes[code] = codes.get(code, 0) + 1

    started = time.perf_counter()
    await asyncio.gather(*(lane(c, f) for c, f in zip(clients, lanes, strict=True)))
    elapsed = time.perf_counter() - started
    for client in clients:
        client.writer.close()
        client.task.cancel()
    return sum(len(f) for f in lanes) / elapsed, latencies, codes


def _stan(frame: bytes) -> bytes:
    return peek(frame, 11).get(11, b"").hex().encode()


def raw_codec_rate(payload: bytes, seconds: float = 2.0) -> float:
    """Raw pyiso8583 decode + encode of one frame, per second."""
    spec = TERMINAL.compile()
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for _ in range(100):
            decoded, _ = iso8583.decode(payload, spec)
            iso8583.encode(decoded, spec)
        count += 100
    return count / (time.perf_counter() - started)


@contextlib.contextmanager
def profiled(pid: int, out: Path | None, gil: bool = False) -> Iterator[None]:
    """py-spy (when asked for, and on PATH) samples the daemon while the block runs: every
    thread's stacks (waits on the GIL included), or with ``gil`` only the GIL holder's — the
    one that says where the CPU goes. A ``.txt`` file gets collapsed stacks, ``.json``
    speedscope, anything else a flame graph. The daemon is paused for each sample: without
    that, stacks read while it runs came out torn, and time in uvloop's C code was taken for
    Python at the loop's top."""
    if out is None:
        yield
        return
    spy = shutil.which("py-spy")
    if spy is None:
        raise SystemExit("--profile needs py-spy on PATH (pip install py-spy)")
    fmt = "speedscope" if out.suffix == ".json" else "raw" if out.suffix == ".txt" else "flamegraph"
    command = [spy, "record", "--pid", str(pid), "--rate", "400", "--format", fmt]
    command += ["-o", str(out)] + (["--gil"] if gil else [])
    recorder = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # attached before the load starts
    try:
        yield
    finally:
        recorder.send_signal(signal.SIGINT)
        recorder.wait(timeout=60)


def _is_writer(pid: int) -> bool:
    """Whether ``pid`` is the ledger's writer process (not the resource tracker)."""
    with contextlib.suppress(OSError):
        return b"ledger.writer.child" in Path(f"/proc/{pid}/cmdline").read_bytes()
    return False


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--terminals", type=int, default=20)
    parser.add_argument("--bills", type=int, default=2400)
    parser.add_argument("--cardholders", type=int, default=120)
    parser.add_argument(
        "--profile", type=Path, default=None, help="py-spy record the daemon into this SVG/file"
    )
    parser.add_argument("--profile-gil", action="store_true", help="sample the GIL holder only")
    parser.add_argument(
        "--profile-writer", type=Path, default=None, help="py-spy record the writer child too"
    )
    parser.add_argument(
        "--card-book",
        action="store_true",
        help="settlements carry the card's challenge and the visit (the centre writes a visit "
        "record and its script: specs/card-layout.md)",
    )
    parser.add_argument(
        "--no-pin",
        action="store_true",
        help="let the scheduler place the generator and the servers (default: the generator "
        "on the last CPU, the daemon and the echo server on the others)",
    )
    args = parser.parse_args(argv if argv is not None else sys.argv[1:])
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        maker = demo_home(home, args.cardholders)
        pids: dict[str, int] = {}
        layout = None if args.no_pin else cores()
        servers = generator = None
        if layout is not None:
            servers, generator = layout
            os.sched_setaffinity(0, generator)
            print(f"CPUs: generator {sorted(generator)}, daemon and echo server {sorted(servers)}")
        with processes(home, pids, servers, generator) as (port, echo_port, http_port):
            started = time.perf_counter()
            lanes, cards = uvloop.run(
                prepare(home, port, http_port, maker, args, card_book=args.card_book)
            )
            print(
                f"prepared {args.bills} bills on {cards} cards and {len(lanes)} POS "
                f"in {time.perf_counter() - started:.0f} s"
            )
            exchanges = sum(len(lane) for lane in lanes)
            echo, daemon = CpuMeter(pids["echo"]), CpuMeter(pids["daemon"])
            helpers = [CpuMeter(pid) for pid in children(pids["daemon"])]  # its writer
            echo.start()
            raw_rate, raw_lat, _ = uvloop.run(drive_once(echo_port, lanes))
            echo.stop()
            writer = next((h.pid for h in helpers if _is_writer(h.pid)), 0)
            with (
                profiled(pids["daemon"], args.profile, args.profile_gil),
                profiled(writer, args.profile_writer),
            ):
                daemon.start()
                for helper in helpers:
                    helper.start()
                own_cpu = time.process_time()
                rate, lat, codes = uvloop.run(drive_once(port, lanes))
                own_cpu = time.process_time() - own_cpu
                daemon.stop()
                for helper in helpers:
                    helper.stop()
        codec_rate = raw_codec_rate(lanes[0][0][0])
        print(f"{len(lanes)} POS, one outstanding each; settlement + advice per bill:")
        report("raw asyncio loopback echo", raw_rate, raw_lat)
        report("medswitch serve, settle + advise", rate, lat)
        print(f"{'raw pyiso8583 decode+encode':34s} {codec_rate:10,.0f} per s (one core)")
        print(f"response codes: {codes}")
        print(f"CPU per exchange: daemon {daemon.per(exchanges)}")
        for helper in helpers:
            if helper.total_s:  # the ledger's writer process (an idle resource tracker: not)
                print(f"                  its child {helper.pid} {helper.per(exchanges)}")
        print(
            f"                  generator {own_cpu / exchanges * 1e6:.0f} us, "
            f"raw echo server {echo.total_s / exchanges * 1e6:.0f} us"
        )


if __name__ == "__main__":
    main()
