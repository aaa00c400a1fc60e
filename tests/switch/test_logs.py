"""The message line (DESIGN §7) is the same line whether it goes straight to the daemon's
JSON-lines handler or through logging's dispatch (an extra handler, a filter, caplog)."""

from __future__ import annotations

import io
import json
import logging
import time

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
