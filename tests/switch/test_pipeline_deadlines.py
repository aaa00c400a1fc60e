"""The pipeline's deadline sweep (switch/pipeline.py): one timer per pipeline, no timer or
task per request beside the work. A request whose work outlasts ``response_timeout_s`` is
answered 96 at its own deadline — also when an earlier, finished request armed the timer — and
its work runs on: its reply is remembered and served to a retransmission. An answer the
listener stops waiting for (its drain) leaves the work running, counted as late and waited for
by ``settle_late``; the listener sends a handler's future's answer, and a handler that raises
before it returns one fails that request only."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from messages.framing import LengthFormat, encode_frame
from switch.listener import Listener, ListenerSettings
from switch.metrics import Metrics
from switch.pipeline import Pipeline
from switch.replies import ReplyCache
from tests.support.echo_link import Answer, EchoLink

DEADLINE_S = 0.3


class Held:
    """A handler whose requests with content ``slow`` wait for ``gate``; the others answer."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.calls: list[str] = []

    async def __call__(self, request: str, context: Any) -> Answer:
        self.calls.append(request)
        if request.endswith("slow"):
            await self.gate.wait()
        return Answer("0210", "00")


def _pipeline(handler: Held, timeout_s: float = DEADLINE_S) -> Pipeline:  # type: ignore[type-arg]
    return Pipeline(
        link=EchoLink(handler),
        replies=ReplyCache(),
        metrics=Metrics(),
        response_timeout_s=timeout_s,
    )


def run(main: Any) -> None:
    asyncio.run(asyncio.wait_for(main(), timeout=20))


def test_a_late_request_is_answered_96_at_its_deadline_and_its_reply_is_remembered() -> None:
    async def main() -> None:
        held = Held()
        pipeline = _pipeline(held)
        loop = asyncio.get_running_loop()
        assert await pipeline.handle(b"0200|fast|x", "peer") == b"0210|00"  # arms the sweep
        await asyncio.sleep(DEADLINE_S / 2)
        started = loop.time()
        assert await pipeline.handle(b"0200|k1|slow", "peer") == b"0210|96"
        waited = loop.time() - started
        assert DEADLINE_S - 0.01 <= waited < DEADLINE_S + 0.15  # its own deadline, not the sweep's
        assert pipeline.late == 1
        retransmitted = pipeline.handle(b"0200|k1|slow", "peer")  # waits for the first's reply
        held.gate.set()  # the work finishes: its reply is the exchange's answer
        assert await retransmitted == b"0210|00"
        for _ in range(100):  # bounded
            if pipeline.late == 0:
                break
            await asyncio.sleep(0.01)
        assert pipeline.late == 0
        assert await pipeline.handle(b"0200|k1|slow", "peer") == b"0210|00"  # remembered
        assert held.calls == ["fast|x", "k1|slow"]  # the work ran once

    run(main)


def test_fast_requests_behind_a_slow_one_are_answered_at_once_and_not_kept() -> None:
    async def main() -> None:
        held = Held()
        pipeline = _pipeline(held, timeout_s=0.5)
        loop = asyncio.get_running_loop()
        slow = pipeline.handle(b"0200|k0|slow", "peer")
        started = loop.time()
        for n in range(50):
            assert await pipeline.handle(f"0200|f{n}|x".encode(), "peer") == b"0210|00"
        assert loop.time() - started < 0.4 and not slow.done()
        assert await slow == b"0210|96"
        assert len(pipeline._flight) == 1  # the sweep dropped the finished ones
        held.gate.set()
        for _ in range(100):  # bounded
            if pipeline.late == 0 and pipeline._sweep is None:
                break
            await asyncio.sleep(0.05)
        assert pipeline.late == 0
        assert pipeline._sweep is None and not pipeline._flight  # nothing in flight: no timer

    run(main)


def test_an_answer_nobody_awaits_any_more_leaves_its_work_running() -> None:
    async def main() -> None:
        held = Held()
        pipeline = _pipeline(held, timeout_s=5.0)
        answer = pipeline.handle(b"0200|k1|slow", "peer")
        await asyncio.sleep(0.05)
        answer.cancel()  # the listener's drain gave up on it
        await asyncio.sleep(0.05)
        assert pipeline.late == 1
        settling = asyncio.ensure_future(pipeline.settle_late(5.0))
        await asyncio.sleep(0.05)
        assert not settling.done()  # waits for the work
        held.gate.set()
        assert await settling == 0
        assert pipeline.replies.get("k1") is not None  # its reply remembered all the same

    run(main)


def test_a_late_answer_that_cannot_be_sealed_is_a_failed_request() -> None:
    class NoSeal(EchoLink):
        async def seal(self, reply: Answer, mac_key: str | None) -> bytes:
            if reply.response_code == "96":
                raise RuntimeError("no HSM")
            return await super().seal(reply, mac_key)

    async def main() -> None:
        held = Held()
        pipeline = Pipeline(
            link=NoSeal(held), replies=ReplyCache(), metrics=Metrics(), response_timeout_s=0.1
        )
        with pytest.raises(RuntimeError, match="no HSM"):
            await pipeline.handle(b"0200|k1|slow", "peer")
        held.gate.set()
        assert await pipeline.settle_late(5.0) == 0
        assert pipeline.replies.get("k1") is not None

    run(main)


async def _exchange(port: int, frames: list[bytes]) -> list[bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    replies = []
    try:
        for frame in frames:
            writer.write(encode_frame(frame, LengthFormat.BINARY2))
            size = int.from_bytes(await reader.readexactly(2), "big")
            replies.append(await reader.readexactly(size))
    finally:
        writer.close()
    return replies


def test_the_listener_sends_a_futures_answer_and_survives_a_handler_that_raises_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def handler(frame: bytes, peer: str) -> asyncio.Future[bytes | None]:
        if frame == b"bad":
            raise ValueError("a bug before any await")
        answer: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_later(0.01, answer.set_result, frame.upper())
        return answer

    async def main() -> None:
        settings = ListenerSettings("127.0.0.1", 0, LengthFormat.BINARY2)
        listener = Listener(settings, handler)
        await listener.start()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
            writer.write(encode_frame(b"bad", LengthFormat.BINARY2))  # no reply: logged
            assert await _exchange(listener.port, [b"one", b"two"]) == [b"ONE", b"TWO"]
            writer.write(encode_frame(b"three", LengthFormat.BINARY2))  # the same connection
            size = int.from_bytes(await reader.readexactly(2), "big")
            assert await reader.readexactly(size) == b"THREE"
            writer.close()
            assert listener.in_flight == 0
        finally:
            await listener.close(1.0)

    caplog.set_level(logging.ERROR)
    run(main)
    failed = [r for r in caplog.records if r.getMessage() == "request failed"]
    assert len(failed) == 1 and failed[0].exc_info is not None
