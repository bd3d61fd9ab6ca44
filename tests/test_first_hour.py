"""A newcomer's first hour: errors that need no heavy library come before importing one; torch's threads follow
the machine's load."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from anime_avatar.core.device import apply_threads, idle_cores
from tests.conftest import ROOT

REPORT = """
import sys
from anime_avatar.cli import main
try:
    main(sys.argv[1:])
except SystemExit as exit:
    print("exit", exit.code, "mlflow imported" if "mlflow" in sys.modules else "mlflow not imported")
"""


def run_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", REPORT, *args], cwd=cwd, capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})  # fmt: skip


@pytest.mark.parametrize("command", ["runs", "audit"])
def test_runs_and_audit_outside_a_project_say_so_before_importing_mlflow(command, tmp_path):
    proc = run_cli([command], tmp_path)
    assert proc.stdout.split() == ["exit", "1", "mlflow", "not", "imported"], proc.stdout + proc.stderr
    assert "params.yaml: no such params file" in proc.stderr
    shutil.copy(ROOT / "params.yaml", tmp_path)  # a project, never run: no mlflow.db
    proc = run_cli([command], tmp_path)
    assert proc.stdout.split() == ["exit", "1", "mlflow", "not", "imported"], proc.stdout + proc.stderr
    assert "no MLflow database at mlflow.db: run the pipeline first" in proc.stderr
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.parametrize(
    ("cores", "load", "idle"), [(2, 0.0, 2), (2, 0.6, 1), (2, 11.0, 1), (16, 3.4, 13), (4, 0.4, 4)]
)
def test_idle_cores_are_the_cores_less_the_load_and_at_least_one(cores, load, idle):
    assert idle_cores(cores, load) == idle


def test_threads_zero_follows_the_load_unless_omp_num_threads_chose(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        monkeypatch.setattr(os, "cpu_count", lambda: 2)
        monkeypatch.setattr(os, "getloadavg", lambda: (1.9, 1.0, 1.0))  # another process holds a core
        assert apply_threads(0) == 1 and torch.get_num_threads() == 1
        monkeypatch.setattr(os, "getloadavg", lambda: (0.1, 0.1, 0.1))
        assert apply_threads(0) == 2 and torch.get_num_threads() == 2
        assert apply_threads(3) == 3 and torch.get_num_threads() == 3  # a number is used as it is
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        torch.set_num_threads(1)
        monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
        assert apply_threads(0) == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
