"""Codec throughput: our decode+parse and build+encode of a 0200 settlement next to raw
pyiso8583 on the same bytes and the same compiled spec, measured in the same run: the codec's
compiled fast path (what :meth:`Codec.decode` and :meth:`Codec.encode` take) and its pyiso8583
reference path (what they fall back to on anything irregular).

    python -m bench.bench_codec [--seconds 2]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import iso8583

from messages.codec import Codec
from messages.private import CardData, Purse
from messages.spec_terminal import TERMINAL
from messages.terminal import Settlement
from messages.terminal_table import build, parse


def sample_settlement() -> Settlement:
    return Settlement(
        stan="000123",
        terminal_id="POS00001",
        institution_id="101320000000001",
        batch="000001",
        pan="6225880123456789",
        amount_fen=12_345,
        card=CardData(
            app_serial=bytes(range(10)),
            purse=Purse.ED,
            key_version=1,
            old_balance_fen=50_000,
            challenge=b"\x01\x02\x03\x04",
        ),
        bill=bytes(32),
        mac=bytes(8),
    )


def rate(operation: Callable[[], object], seconds: float) -> float:
    """Operations per second, best of three timed slices."""
    best = 0.0
    for _ in range(3):
        count, start = 0, time.perf_counter()
        deadline = start + seconds / 3
        while True:
            for _ in range(200):
                operation()
            count += 200
            now = time.perf_counter()
            if now >= deadline:
                break
        best = max(best, count / (now - start))
    return best


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args(argv)
    codec = Codec(TERMINAL)
    spec = TERMINAL.compile()
    typed = sample_settlement()
    payload = codec.encode(build(typed))
    raw_doc, _ = iso8583.decode(payload, spec)

    def raw_encode() -> object:
        return iso8583.encode(dict(raw_doc), spec)

    message = build(typed)
    results = {
        "raw pyiso8583 decode": rate(lambda: iso8583.decode(payload, spec), args.seconds),
        "codec reference decode": rate(lambda: codec.reference_decode(payload), args.seconds),
        "codec decode (compiled)": rate(lambda: codec.decode(payload), args.seconds),
        "codec decode + typed parse": rate(lambda: parse(codec.decode(payload)), args.seconds),
        "raw pyiso8583 encode": rate(raw_encode, args.seconds),
        "codec reference encode": rate(lambda: codec.reference_encode(message), args.seconds),
        "codec encode (compiled)": rate(lambda: codec.encode(message), args.seconds),
        "typed build + codec encode": rate(lambda: codec.encode(build(typed)), args.seconds),
    }
    for name, value in results.items():
        print(f"{name:28s} {value:10,.0f} msg/s {1e6 / value:6.1f} us")
    raw_dec, raw_enc = results["raw pyiso8583 decode"], results["raw pyiso8583 encode"]
    print(
        "cost vs raw pyiso8583: "
        f"reference decode {raw_dec / results['codec reference decode']:.2f}x, "
        f"compiled decode {raw_dec / results['codec decode (compiled)']:.2f}x, "
        f"reference encode {raw_enc / results['codec reference encode']:.2f}x, "
        f"compiled encode {raw_enc / results['codec encode (compiled)']:.2f}x; "
        f"with typed transactions decode {raw_dec / results['codec decode + typed parse']:.2f}x, "
        f"encode {raw_enc / results['typed build + codec encode']:.2f}x"
    )
    return results


if __name__ == "__main__":
    main()
