"""One data dir, one brokerd.

Two brokers on the same SQLite file would each believe they own every queue:
each would hand out the same messages (duplicates to their consumers) and
overwrite the other's rows. The second one must refuse to start, in one line
that names the directory and the process holding it.
"""

from __future__ import annotations

from pathlib import Path

from brokerproc import BrokerProcess
from test_startup_storage import refusal, run_brokerd


def test_a_second_brokerd_on_the_same_data_dir_refuses_to_start(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = BrokerProcess(data).start()
    try:
        result = run_brokerd(data)
        line = refusal(result, data / "brokerd.sqlite3")
        assert f"another brokerd (pid {first.pid})" in line, line
    finally:
        first.kill()


def test_the_data_dir_is_free_again_once_its_brokerd_has_stopped(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = BrokerProcess(data).start()
    assert first.terminate() == 0
    second = BrokerProcess(data).start()  # would raise if it refused to start
    second.kill()
    third = BrokerProcess(data).start()  # a killed broker's lock dies with it
    third.kill()
