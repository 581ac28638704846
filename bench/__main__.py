"""``python -m bench``: run the workloads, print the table, write JSON and a PNG chart.

Exit status: 0 when every brokerd workload that ran succeeded (peers being unreachable,
skipped or failing do not count), 1 when brokerd failed a workload, 2 on bad arguments.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from datetime import UTC, datetime


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    from .config import settings_from_args
    from .model import FAILED
    from .report import render_table, run_warnings, system_notes, write_chart, write_json
    from .runner import Runner

    settings = settings_from_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    os.environ["BENCH_BROKERD_ACK"] = settings.brokerd_ack  # read by the spawned consumers
    if settings.brokerd_tls:  # read by the broker processes and the spawned clients
        from .tlscerts import ENV, make_certificates

        os.environ[ENV] = str(make_certificates())
    if settings.brokerd_user:  # read by the broker processes (bench/procs.py)
        from .procs import USER_ENV

        os.environ[USER_ENV] = "1"
    if settings.brokerd_store:  # read by the broker processes (bench/pgstore.py)
        from .pgstore import ENV as STORE_ENV

        os.environ[STORE_ENV] = settings.brokerd_store
    started = datetime.now(UTC)
    runner = Runner(settings)
    try:
        outcomes = asyncio.run(runner.run())
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        outcomes = runner.outcomes
        if not outcomes:
            return 130
    print()
    print(render_table(outcomes, settings.systems))
    meta = runner.meta()
    notes = system_notes(meta) + [f"warning: {w}" for w in run_warnings(outcomes)]
    if notes:
        print()
        print("\n".join(f"* {n}" for n in notes))
    print()
    latest, stamped = write_json(settings.out, outcomes, settings.systems, meta, started)
    print(f"results: {latest} (and {stamped.name})")
    if settings.chart:
        chart = write_chart(settings.out, outcomes, settings.systems, started)
        if chart is not None:
            print(f"chart:   {chart}")
    failed = [o for o in outcomes if o.system == "brokerd" and o.status == FAILED]
    if failed:
        names = ", ".join(o.workload for o in failed)
        print(f"brokerd failed {len(failed)} workload(s): {names}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
