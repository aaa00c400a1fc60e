"""The message line (DESIGN §7) is the same line whether it goes straight to the daemon's
JSON-lines handler or through logging's dispatch (an extra handler, a filter, caplog)."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import threading
import time

import pytest

from messages.private import CardData
from messages.terminal import Settlement
from switch.logs import BatchedStreamHandler, JsonFormatter, log_message


def _logged(log: logging.Logger, stream: io.StringIO) -> dict[str, object]:
    request = Settlement(
        stan="000042",
        terminal_id="P0000001",
        institution_id="H001".ljust(15),
        pan="6212340000000000017",
        amount_fen=1000,
        card=CardData(),
        bill=b"",
    )
    envelope = {"terminal": "P0000001", "mti": "0200", "stan": "000042", "batch": "000001"}
    log_message(log, "terminal", envelope, request, "00", "handle_settlement", time.perf_counter())
    for handler in log.handlers:
        handler.flush()
    line = stream.getvalue().splitlines()[-1]
    entry = json.loads(line)
    entry.pop("ts"), entry.pop("ms")
    return entry  # type: ignore[no-any-return]


def test_the_direct_line_is_the_dispatched_line() -> None:
    stream = io.StringIO()
    handler = BatchedStreamHandler(stream, interval_s=60)
    handler.setFormatter(JsonFormatter())
    log = logging.getLogger("test.medswitch.messages")
    log.handlers[:] = [handler]
    log.propagate, log.level = False, logging.INFO
    try:
        direct = _logged(log, stream)
        log.addFilter(lambda record: True)  # a filter on the way: through logging's dispatch
        dispatched = _logged(log, stream)
    finally:
        handler.close()
    assert direct == dispatched
    assert direct["pan"] == "621234*********0017" and direct["msg"] == "message"
    assert stream.getvalue().count("\n") == 2


@pytest.mark.parametrize(
    ("envelope", "texts", "amount_fen", "ms"),
    [
        ({"terminal": "P0000001", "mti": "0200"}, ("00", "handle_settlement", "621234***0017"),
         1000, 1.5),
        ({"terminal": 'P"\\\n\x01é中'}, ("A0", "refused", ""), None, 0.0),
        ({}, ("30", "h", "*****"), 0, 12345.678),
        ({"batch": "000001", "stan": "000042"}, ("00", "h", "p"), -7, 1e-05),
        ({"terminal": "门诊01", "batch": "a b", "stan": ""}, ("00", "h", "p"), 1, 2.0),
    ],
)  # fmt: skip
def test_the_written_out_line_is_the_encoded_line(
    envelope: dict[str, object], texts: tuple[str, str, str], amount_fen: int | None, ms: float
) -> None:
    formatter = JsonFormatter()
    rc, handler, pan = texts
    fields = {"interface": "terminal", **envelope, "rc": rc, "handler": handler, "pan": pan,
              "amount_fen": amount_fen, "ms": ms}  # fmt: skip
    created = 1764151200.0425
    line = formatter.message_line(
        created, "medswitch.terminal", "terminal", envelope, texts, amount_fen, ms
    )
    assert line == formatter.line(created, "info", "medswitch.terminal", "message", fields)
    assert list(json.loads(line)) == ["ts", "level", "logger", "msg", *fields]


@pytest.mark.parametrize(
    "created", [1764151200.0, 1764151200.0425, 1764151200.9999, 1764151201.001, 0.5, -2.25]
)
def test_the_timestamp_is_iso_with_milliseconds(created: float) -> None:
    second = int(created)
    millis = int((created - second) * 1000)
    moment = dt.datetime.fromtimestamp(second, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    expected = f"{moment}.{str(1000 + millis)[1:]}+00:00"
    assert JsonFormatter()._timestamp(created) == expected


@pytest.mark.parametrize(
    ("envelope", "amount_fen", "ms"),
    [
        ({"rc": "00"}, 1, 1.0),  # an envelope key the line has: the dict decides its place
        ({"terminal": 1}, 1, 1.0),  # not a str
        ({"terminal": "P1"}, True, 1.0),  # a bool is no amount
        ({"terminal": "P1"}, 1.5, 1.0),
        ({"terminal": "P1"}, 1, float("nan")),
    ],
)
def test_anything_else_is_left_to_the_encoder(
    envelope: dict[str, object], amount_fen: object, ms: float
) -> None:
    formatter = JsonFormatter()
    texts = ("00", "h", "p")
    assert formatter.message_line(0.0, "l", "terminal", envelope, texts, amount_fen, ms) is None


def test_lines_added_from_several_threads_are_all_written_once_in_order() -> None:
    stream = io.StringIO()
    handler = BatchedStreamHandler(stream, lines_max=7, interval_s=0.001)

    def add(thread: int) -> None:
        for n in range(2000):
            handler.add_line(f"{thread} {n}")

    threads = [threading.Thread(target=add, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    handler.flush()
    handler.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 8000
    for t in range(4):
        assert [line for line in lines if line.startswith(f"{t} ")] == [
            f"{t} {n}" for n in range(2000)
        ]
