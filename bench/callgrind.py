"""A process's instruction count, from callgrind: a cost figure that does not swing.

On a shared 2-core machine the same run's msg/s and CPU seconds differ by ±20% from
one try to the next, so a 2% effect cannot be seen in them. The number of
instructions a process executes for a fixed amount of work hardly moves with the
machine's load: run it under ``valgrind --tool=callgrind`` and read its counter.

The counter is read with ``callgrind_control -d``, which writes what was counted
since the previous dump and starts counting afresh: a dump before a phase and one
after it, and the second dump's ``summary:`` line (instructions executed, ``Ir``,
all the process's threads) is the phase's cost. Instrumentation runs the
process about 50 times slower, so what the process does per wall-clock second
(timers) weighs more than it would natively; a phase's count is still dominated by
the work it was given, and the same inflation applies to both sides of an A/B.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

OUT_NAME = "callgrind.out"


def available() -> bool:
    return shutil.which("valgrind") is not None and shutil.which("callgrind_control") is not None


def prefix(out_dir: Path) -> list[str]:
    """The argv prefix that runs a command under callgrind, its dumps in ``out_dir``.

    ``--dump-instr=no`` keeps dumps to per-function totals (small and quick);
    ``--fair-sched=yes`` lets the broker's writer thread take turns with the event
    loop's thread (valgrind runs one thread at a time).
    """
    return [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={out_dir / OUT_NAME}",
        "--dump-instr=no",
        "--fair-sched=yes",
        "--quiet",
    ]


class Counter:
    """Zero and read the instruction counter of one process running under callgrind."""

    def __init__(self, pid: int, out_dir: Path) -> None:
        self.pid = pid
        self.out_dir = out_dir

    def _control(self, *args: str) -> None:
        subprocess.run(
            ["callgrind_control", *args, str(self.pid)],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=120,
        )

    def dump(self, label: str) -> int:
        """Instructions executed since the previous dump (or the start), all threads."""
        before = set(self.out_dir.glob(OUT_NAME + ".*"))
        # A label must not look like a process id or a name to callgrind_control.
        self._control(f"--dump={label.replace(' ', '-')}")
        # The command is carried out when the process next runs: wait for the
        # file, and for its last line (the totals) to be written.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            new = sorted(
                set(self.out_dir.glob(OUT_NAME + ".*")) - before,
                key=lambda p: int(p.suffix[1:]),
            )
            if new and _complete(new[-1]):
                return totals(new[-1])
            time.sleep(0.05)
        raise RuntimeError(f"callgrind wrote no dump for {label!r}")


def _complete(dump: Path) -> bool:
    with dump.open("rb") as f:
        return any(line.startswith(b"totals:") for line in f)


def totals(dump: Path) -> int:
    """The ``summary:`` line of a callgrind dump: the part's total, as
    ``callgrind_annotate`` prints it in "PROGRAM TOTALS"."""
    with dump.open() as f:
        for line in f:
            if line.startswith("summary:"):
                return int(line.split()[1])
    raise RuntimeError(f"no summary in {dump}")
