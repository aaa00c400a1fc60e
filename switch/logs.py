"""Structured logs: one JSON object per line (DESIGN §7). A message's fields travel in the
record's ``fields`` extra; PANs reach the log masked, never whole.

>>> import logging
>>> record = logging.LogRecord("medswitch.terminal", logging.INFO, "", 0, "message", (), None)
>>> record.fields = {"mti": "0200", "rc": "00"}
>>> line = JsonFormatter().format(record)
>>> json.loads(line)["mti"], json.loads(line)["msg"]
('0200', 'message')
"""

from __future__ import annotations

import collections
import datetime as dt
import json
import logging
import threading
import time
from collections.abc import Mapping
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
from typing import Protocol, TextIO

from messages.pretty import mask_pan

QUIET_LIBRARIES = ("alembic",)
_text = encode_basestring  # a str as JSON, quoted (not ASCII-only: ensure_ascii is off)
_INFINITY = float("inf")
# The keys of a message line besides its envelope's, in their order.
_MESSAGE_KEYS = frozenset(
    ("ts", "level", "logger", "msg", "interface", "rc", "handler", "pan", "amount_fen", "ms")
)

# The envelope's keys as they open their JSON member (``"terminal":``), made once per key; the
# same few keys come in every message line (bounded all the same: keys are the caller's).
_HEADS: dict[str, str] = {}
_HEADS_MAX = 64
# A timestamp's milliseconds and zone, by the milliseconds (0-999).
_MILLIS = tuple(f".{millis:03d}+00:00" for millis in range(1000))

# One encoder for every line: json.dumps with options builds a new one per call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
# And its C encoding function, made once: JSONEncoder.encode makes it again for every line
# (a third of a message line's encoding). No circular check: a line is a flat dict of strings
# and numbers, and a value that holds itself still fails (RecursionError, not ValueError),
# in ``format`` as before.
_ENCODE = c_make_encoder(
    None, _ENCODER.default, encode_basestring, None, ":", ",", False, False, True
)


class JsonFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self._second = -1  # the whole second whose ISO prefix is cached
        self._prefix = ""

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", None)
        extra = dict(fields) if isinstance(fields, dict) else {}
        if record.exc_info:
            extra["error"] = self.formatException(record.exc_info)
        message = record.getMessage()
        return self.line(record.created, record.levelname.lower(), record.name, message, extra)

    def line(
        self, created: float, level: str, logger: str, message: str, fields: Mapping[str, object]
    ) -> str:
        """The JSON line of one event (``created`` as ``time.time()``)."""
        entry: dict[str, object] = {
            "ts": self._timestamp(created),
            "level": level,
            "logger": logger,
            "msg": message,
        }
        entry.update(fields)
        return "".join(_ENCODE(entry, 0))

    def message_line(
        self,
        created: float,
        logger: str,
        interface: str,
        envelope: Mapping[str, object],
        texts: tuple[str, str, str],
        amount_fen: object,
        ms: float,
    ) -> str | None:
        """:meth:`line` of :func:`log_message`'s fields, written out rather than built as a
        dict and encoded (a third of the time): the same line, when every text is a ``str``,
        the amount an ``int`` or ``None`` and no envelope key is one of the line's own.
        Otherwise ``None``: the caller encodes the dict.

        ``texts`` are the response code, the handler and the masked PAN."""
        if type(amount_fen) is int:
            amount = int.__repr__(amount_fen)
        elif amount_fen is None:
            amount = "null"
        else:
            return None
        parts = []
        heads = _HEADS
        for key, value in envelope.items():
            head = heads.get(key) if type(key) is str else None
            if head is None:  # a key not seen yet (or not a line's own key)
                if type(key) is not str or key in _MESSAGE_KEYS:
                    return None
                head = f"{_text(key)}:"
                if len(heads) < _HEADS_MAX:
                    heads[key] = head
            if type(value) is not str:
                return None
            # letters and digits need no escaping: quoted as they are (a terminal id, a STAN)
            parts.append(f'{head}"{value}",' if value.isalnum() else f"{head}{_text(value)},")
        rc, handler, pan = texts
        if not (type(rc) is type(handler) is type(pan) is type(interface) is type(logger) is str):
            return None
        if type(ms) is not float or not -_INFINITY < ms < _INFINITY:  # JSON's NaN, Infinity
            return None
        return (
            f'{{"ts":"{self._timestamp(created)}","level":"info","logger":{_text(logger)},'
            f'"msg":"message","interface":{_text(interface)},{"".join(parts)}'
            f'"rc":{_text(rc)},"handler":{_text(handler)},"pan":{_text(pan)},'
            f'"amount_fen":{amount},"ms":{float.__repr__(ms)}}}'
        )

    def _timestamp(self, created: float) -> str:
        """UTC ISO 8601 with milliseconds, the date and time formatted once a second.

        >>> JsonFormatter()._timestamp(1764151200.0425)
        '2025-11-26T10:00:00.042+00:00'
        """
        second = int(created)
        if second != self._second:
            moment = dt.datetime.fromtimestamp(second, dt.UTC)
            self._second, self._prefix = second, moment.strftime("%Y-%m-%dT%H:%M:%S")
        millis = int((created - second) * 1000)
        if millis >= 0:  # its ".mmm+00:00" made once (before 1970 the count runs negative)
            return self._prefix + _MILLIS[millis]
        return f"{self._prefix}.{str(1000 + millis)[1:]}+00:00"


class BatchedStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    r"""A stream handler that writes lines in batches: at most ``lines_max`` lines or
    ``interval_s`` seconds after the first waiting line (a small thread flushes a quiet
    daemon), and at once for a warning or worse. One write system call per message on the
    event loop's thread costs more than the line itself, and hands the GIL to whichever thread
    is waiting for it. ``flush`` (called by ``logging.shutdown`` at exit) writes everything.

    >>> import io
    >>> stream = io.StringIO()
    >>> handler = BatchedStreamHandler(stream, lines_max=2, interval_s=60)
    >>> logger = logging.getLogger("doctest.batched")
    >>> logger.addHandler(handler); logger.propagate = False; logger.setLevel(logging.INFO)
    >>> logger.warning("one"); stream.getvalue()
    'one\n'
    >>> logger.error("two"); logger.info("three"); stream.getvalue()
    'one\ntwo\n'
    >>> handler.flush(); stream.getvalue()
    'one\ntwo\nthree\n'
    >>> handler.close()
    """

    def __init__(
        self, stream: TextIO | None = None, *, lines_max: int = 256, interval_s: float = 0.2
    ) -> None:
        super().__init__(stream)
        # Appended without the lock (a deque's append is atomic); drained under it, in order.
        self._waiting: collections.deque[str] = collections.deque()
        self._lines_max = lines_max
        self._interval_s = interval_s
        self._stopping = threading.Event()
        self._flusher = threading.Thread(target=self._flush_now_and_then, daemon=True)
        self._flusher.start()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self.add_line(line, record.levelno >= logging.WARNING)

    def add_line(self, line: str, urgent: bool = False) -> None:
        """Queue ``line`` (written at once when ``urgent`` or when the batch is full)."""
        waiting = self._waiting
        waiting.append(line)
        if urgent or len(waiting) >= self._lines_max:
            self.flush()

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            waiting = self._waiting
            lines = [waiting.popleft() for _ in range(len(waiting))]
            if lines:
                self.stream.write("\n".join(lines) + "\n")
            if self.stream and hasattr(self.stream, "flush"):
                self.stream.flush()

    def close(self) -> None:
        self._stopping.set()
        super().close()

    def _flush_now_and_then(self) -> None:
        while not self._stopping.wait(self._interval_s):
            if self._waiting:
                self.flush()


def configure(level: int = logging.INFO) -> None:
    """JSON lines on stderr for the whole process. The record attributes no line shows — the
    caller's file and line, thread and process — are not collected (the logging HOWTO's
    optimisations): a message line costs a third less."""
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = BatchedStreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Libraries' own progress notes (Alembic's "Context impl SQLiteImpl.") are not the
    # switch's: their warnings still show.
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))


class Logged(Protocol):
    """What a message line reads of a link's typed request (terminal and bank messages)."""

    def card_number(self) -> str | None: ...

    def amount(self) -> int | None: ...


def log_message(
    log: logging.Logger,
    interface: str,
    envelope: Mapping[str, object],
    request: Logged,
    response_code: str,
    handler: str,
    started: float,
) -> None:
    """The one JSON line per message (DESIGN §7): the interface's envelope fields, the response
    code, the handler, the PAN masked (first 6 + last 4), the amount and the time taken since
    ``started`` (``time.perf_counter()``). Nothing is built when INFO is off."""
    if not log.isEnabledFor(logging.INFO):
        return
    pan = mask_pan(request.card_number() or "")
    amount_fen = request.amount()
    ms = round((time.perf_counter() - started) * 1000, 3)
    direct = _only_handler(log)
    if direct is not None:
        formatter = direct.formatter
        assert isinstance(formatter, JsonFormatter)
        line = formatter.message_line(
            time.time(), log.name, interface, envelope, (response_code, handler, pan),
            amount_fen, ms,
        )  # fmt: skip
        if line is not None:
            direct.add_line(line)
            return
    fields = {
        "interface": interface,
        **envelope,
        "rc": response_code,
        "handler": handler,
        "pan": pan,
        "amount_fen": amount_fen,
        "ms": ms,
    }
    if direct is None:
        log.info("message", extra={"fields": fields})
        return
    formatter = direct.formatter
    assert isinstance(formatter, JsonFormatter)
    direct.add_line(formatter.line(time.time(), "info", log.name, "message", fields))


def _only_handler(log: logging.Logger) -> BatchedStreamHandler | None:
    """The daemon's JSON-lines handler when it alone would get ``log``'s INFO records (no
    other handler, no filter on the way): then the message line goes straight to it — the same
    line, without a LogRecord and the dispatch, a third of a message's logging. Otherwise
    (tests capturing records, an operator's extra handler) ``None``: log through logging."""
    found: BatchedStreamHandler | None = None
    logger: logging.Logger | None = log
    while logger is not None:
        if logger.filters:
            return None
        for handler in logger.handlers:
            if found is not None or not isinstance(handler, BatchedStreamHandler):
                return None
            if handler.filters or handler.level > logging.INFO:
                return None
            if not isinstance(handler.formatter, JsonFormatter):
                return None
            found = handler
        logger = logger.parent if logger.propagate else None
    return found
