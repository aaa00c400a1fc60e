"""`bench_settle` with its daemon under callgrind, counting only the timed phase: instructions
per exchange in the daemon's process (every thread; not its ledger writer, which is exec'd and
not traced).

    python -m bench.callgrind_settle [--out DIR] [bench_settle's options, e.g. --bills 200]

The daemon starts under ``valgrind --tool=callgrind --instr-atstart=no``; `callgrind_control -i
on` just before the timed phase's first frame and ``-i off`` plus a dump after its last answer,
so the preparation (cards, bills, sign-ons) and the shutdown are not counted. The count depends
on the frames, not on the host's load: compare runs with the same options (a smaller
``--bills`` keeps the preparation, 50 times slower under valgrind, to a few minutes).
``callgrind_annotate DIR/callgrind.out.<pid>.1`` gives the C functions (the interpreter's).
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench import bench_settle, bench_switch

COUNTED: dict[str, int] = {}
#: The daemon, 50 times slower under callgrind, reads the estate's change counts (cards,
#: terminals) once its kept records are 5 ms old: at every exchange there, every ~12 at full
#: speed. The window is stretched as much as the daemon is slowed, so that the count is of
#: what an exchange costs at full speed (sitecustomize runs before the daemon's imports).
SITECUSTOMIZE = """\
import switch.cards
switch.cards.KEEP_S = 0.25
"""


def main(argv: list[str]) -> None:
    out = Path("/tmp/callgrind-settle")
    if argv[:1] == ["--out"]:
        out, argv = Path(argv[1]), argv[2:]
    out.mkdir(parents=True, exist_ok=True)
    site = out / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    popen = subprocess.Popen

    class Traced(popen):  # type: ignore[misc,valid-type]
        """The daemon's command under callgrind, other commands as they are."""

        def __init__(self, args: Any, *rest: Any, **kwargs: Any) -> None:
            if isinstance(args, list) and args[1:2] == ["serve"]:
                args = [
                    "valgrind",
                    "--tool=callgrind",
                    "--instr-atstart=no",
                    "--separate-threads=yes",
                    f"--callgrind-out-file={out}/callgrind.out.%p",
                    sys.executable,
                    *args,
                ]
                env = kwargs["env"]
                kwargs["env"] = {**env, "PYTHONPATH": f"{site}:{env.get('PYTHONPATH', '')}"}
            super().__init__(args, *rest, **kwargs)

    @contextlib.contextmanager
    def counted(pid: int, _out: Path | None, _gil: bool = False) -> Iterator[None]:
        if "daemon" in COUNTED:
            yield  # the second call: the writer's (not traced)
            return
        COUNTED["daemon"] = pid
        subprocess.run(["callgrind_control", "-i", "on", str(pid)], check=True, capture_output=True)
        try:
            yield
        finally:
            subprocess.run(["callgrind_control", "-i", "off", str(pid)], check=True)
            subprocess.run(["callgrind_control", "-d", "timed", str(pid)], check=True)

    bench_switch.subprocess.Popen = Traced  # type: ignore[misc]
    bench_settle.profiled = counted  # type: ignore[assignment]
    bench_settle.main(argv)
    pid = COUNTED["daemon"]
    dumps = sorted(out.glob(f"callgrind.out.{pid}.1-*"))  # one per thread, the loop's first
    counts = [_total(dump) for dump in dumps]
    bills = int(argv[argv.index("--bills") + 1]) if "--bills" in argv else 2400
    exchanges = 2 * bills
    print(
        f"callgrind: {sum(counts):,} instructions in the timed phase, {out}/callgrind.out.{pid}.*"
    )
    print(
        f"           {sum(counts) / exchanges / 1e3:,.1f}k per exchange ({exchanges} exchanges), "
        f"event loop {counts[0] / exchanges / 1e3:,.1f}k, other threads "
        + ", ".join(f"{c / exchanges / 1e3:,.1f}k" for c in counts[1:] if c)
    )


def _total(dump: Path) -> int:
    for line in dump.read_text().splitlines():
        if match := re.match(r"totals: (\d+)", line):
            return int(match.group(1))
    raise SystemExit(f"no totals in {dump}")


if __name__ == "__main__":
    main(sys.argv[1:])
