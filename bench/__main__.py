"""`make bench`: every benchmark in turn, each printing its numbers beside its baseline."""

from __future__ import annotations

import importlib
import sys
import time

MODULES = (
    "bench.bench_codec",
    "bench.bench_hsm",
    "bench.bench_ledger",
    "bench.bench_switch",
    "bench.bench_settle",
    "bench.bench_pipeline",
    "bench.bench_dayend",
    "bench.bench_bank_link",
    "bench.bench_nac",
    "bench.bench_fuzz",  # 1,000,000 frames: minutes
)


def run() -> int:
    failed = 0
    for name in MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            print(f"== {name}: not available ({err})\n")
            continue
        print(f"== {name}")
        start = time.perf_counter()
        try:
            saved, sys.argv = sys.argv, [name]
            module.main()
        except Exception as err:  # a broken bench must not hide the others' numbers
            failed += 1
            print(f"!! {name} failed: {err!r}")
        finally:
            sys.argv = saved
        print(f"   ({time.perf_counter() - start:.1f} s)\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(run())
