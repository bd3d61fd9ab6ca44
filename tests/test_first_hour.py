"""A newcomer's first hour: errors that need no heavy library come before importing one."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

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
