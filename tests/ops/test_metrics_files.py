"""Prometheus sample files go only where PROMETHEUS_MULTIPROC_DIR says, never the current directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

COUNT_ONE = "import vault.metrics as m; m.CALLBACKS.labels('config', 'applied').inc()"


def _count_one_in(cwd: Path, multiproc_dir: str) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": multiproc_dir}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    subprocess.run([sys.executable, "-c", COUNT_ONE], cwd=cwd, env=env, check=True, timeout=60)


def test_an_empty_multiprocess_directory_writes_no_sample_files_where_the_process_stands(
    tmp_path: Path,
) -> None:
    _count_one_in(tmp_path, "")
    assert list(tmp_path.iterdir()) == []


def test_a_multiprocess_directory_receives_the_sample_files(tmp_path: Path) -> None:
    samples = tmp_path / "samples"
    samples.mkdir()
    _count_one_in(tmp_path, str(samples))
    assert [p.name for p in samples.iterdir()]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["samples"]
