"""docs/tasks.md's examples run as written: the Quick start's ``proj/tasks.py``
and the Testing section's ``conftest.py`` and ``test_sms.py`` are taken from
the page itself and run by pytest in a fresh directory, against a real broker
and a real worker (the plugin's fixtures)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "tasks.md"


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def _block_starting(blocks: list[str], first_line: str) -> str:
    found = [b for b in blocks if b.splitlines()[0].strip() == first_line]
    assert len(found) == 1, f"docs/tasks.md has {len(found)} blocks starting {first_line!r}"
    return found[0]


def test_the_testing_example_runs_against_the_quick_start_app(tmp_path: Path) -> None:
    blocks = _python_blocks(DOC.read_text())
    quick_start = _block_starting(blocks, "# proj/__init__.py: empty")
    tasks_py = quick_start.split("# proj/tasks.py\n", 1)[1]
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "__init__.py").write_text("")
    (tmp_path / "proj" / "tasks.py").write_text(tasks_py)
    (tmp_path / "conftest.py").write_text(_block_starting(blocks, "# conftest.py"))
    (tmp_path / "test_sms.py").write_text(_block_starting(blocks, "# test_sms.py"))
    env = {k: v for k, v in os.environ.items() if k not in ("BROKERD_URL", "CELERY_BROKER_URL")}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_sms.py"],
        check=False,
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 passed" in run.stdout
