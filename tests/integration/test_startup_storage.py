"""A database brokerd cannot use stops it at start with one line naming the file
and what to do, exit status 1, never a traceback; a zero-length database in a
data dir that held one is refused instead of silently starting an empty broker."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from brokerd.message import Message
from brokerd.storage import SqliteStore
from brokerd.storage.base import Batch

DB = "brokerd.sqlite3"
#: Upper bound for a broker that should refuse to start; one that starts is
#: killed after it and the test fails.
BOUND = 20.0


def run_brokerd(data_dir: Path) -> subprocess.CompletedProcess[str]:
    cmd = [
        sys.executable, "-m", "brokerd",
        "--host", "127.0.0.1", "--port", "0", "--metrics-port", "0",
        "--data-dir", str(data_dir),
    ]  # fmt: skip
    try:
        return subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=BOUND)
    except subprocess.TimeoutExpired as exc:
        out = exc.stderr.decode() if isinstance(exc.stderr, bytes) else exc.stderr or ""
        pytest.fail(f"brokerd started instead of refusing the database:\n{out[-2000:]}")


def refusal(result: subprocess.CompletedProcess[str], path: Path) -> str:
    """The one error line, after checking the exit status and that nothing else went wrong."""
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("brokerd: ")]
    assert len(errors) == 1, result.stderr
    line = errors[0]
    assert line.startswith(f"brokerd: cannot open {path}: "), line
    return line


def make_database(data_dir: Path, messages: int = 0) -> Path:
    """A real brokerd database holding ``messages`` 1 KiB messages."""
    store = SqliteStore(data_dir / DB)
    store.recover(0.0)
    if messages:
        batch = Batch()
        for i in range(1, messages + 1):
            body = os.urandom(1024)
            batch.insert(Message(i, "q", "", "q", body, None, None, 0, 0, None, seq=i))
        done: list[BaseException | None] = []
        store.start(lambda fn, *args: fn(*args))
        store.commit(batch, done.append)
    store.close()
    return data_dir / DB


def test_garbage_database_is_refused_with_one_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    db = data / DB
    db.write_bytes(b"this is not an sqlite database\n" * 512)
    line = refusal(run_brokerd(data), db)
    assert "not a database" in line
    assert "backup" in line and "move it aside" in line


def test_truncated_database_is_refused_with_one_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    db = make_database(data, messages=2000)
    os.truncate(db, db.stat().st_size // 2)
    line = refusal(run_brokerd(data), db)
    assert "malformed" in line or "corrupt" in line
    assert "backup" in line


def test_zero_length_database_in_a_used_data_dir_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    db = make_database(data, messages=10)
    os.truncate(db, 0)
    line = refusal(run_brokerd(data), db)
    assert "empty" in line
    assert db.stat().st_size == 0  # left as found, for whoever investigates


def test_new_data_dir_starts_fresh(tmp_path: Path) -> None:
    from brokerproc import BrokerProcess

    proc = BrokerProcess(tmp_path / "new").start()
    try:
        assert (tmp_path / "new" / DB).stat().st_size > 0
    finally:
        proc.kill()
    # ... and the database it created is accepted at the next start.
    proc.start()
    proc.kill()


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[None]:
    """Make ``path`` unwritable even for root (immutable), or skip."""
    if os.geteuid() != 0:
        mode = path.stat().st_mode
        path.chmod(0o555 if path.is_dir() else 0o444)
        try:
            yield
        finally:
            path.chmod(mode)
        return
    made = subprocess.run(["chattr", "+i", str(path)], capture_output=True, check=False)
    if made.returncode != 0:
        pytest.skip(f"running as root and cannot make {path} immutable: {made.stderr!r}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def test_read_only_database_is_refused_with_one_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    db = make_database(data, messages=10)
    with read_only(db):
        line = refusal(run_brokerd(data), db)
    assert "read-only" in line or "permission" in line.lower()


def test_read_only_data_dir_is_refused_with_one_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    db = make_database(data, messages=10)
    with read_only(data):
        line = refusal(run_brokerd(data), db)
    assert "permission" in line.lower() or "read-only" in line


def test_data_dir_that_is_a_file_is_refused_with_one_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.write_text("not a directory")
    result = run_brokerd(data)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 1
    assert f"brokerd: cannot open {data / DB}: " in result.stderr
