"""The command line: --version, global options anywhere, a description per command, params as YAML."""

from __future__ import annotations

import pytest
import yaml

from anime_avatar import __version__
from pipelines.cli import main
from tests.conftest import ROOT, params_with

COMMANDS = [
    "params",
    "faces",
    "generate",
    "stylize",
    "avatar",
    "runs",
    "audit",
    "ui",
    "pipeline",
    "retrain",
    "schedule",
    "experiments",
]


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"anime-avatar {__version__}"


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_help_says_what_it_does(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = capsys.readouterr().out
    usage, _, rest = text.partition("\n\n")
    assert usage.startswith(f"usage: anime-avatar {command}")
    description = rest.split("\n\n")[0]
    assert len(description.split()) >= 6, f"{command} --help has no description: {text}"
    assert "--params" in text and "--verbose" in text  # the global options are accepted here too


def test_params_prints_yaml_and_global_options_work_after_the_command(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    changed = tmp_path / "params.yaml"
    values = yaml.safe_load((ROOT / "params.yaml").read_text())
    values["train"]["steps"] = 7
    changed.write_text(yaml.safe_dump(values))

    main(["params"])
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed == params_with().model_dump(mode="json", by_alias=True)
    assert printed["train"]["steps"] == 3000 and printed["model"]["arch"] == "sagan"

    main(["params", "--params", str(changed), "-v"])  # after the command
    assert yaml.safe_load(capsys.readouterr().out)["train"]["steps"] == 7
    main(["--params", str(changed), "params"])  # before it, as before
    assert yaml.safe_load(capsys.readouterr().out)["train"]["steps"] == 7
    main(["params", "--json"])
    assert '"steps": 3000' in capsys.readouterr().out


def test_make_demo_prepares_its_own_workspace_with_small_params(tmp_path):
    from anime_avatar.core.params import load_params
    from pipelines import demo

    work = demo.prepare(tmp_path / "demo")
    params = load_params(work / "params.yaml")
    assert params.data.synthetic.count == 100 and params.train.steps == 300 and params.eval.n_samples == 100
    # 100 illustrations hold 1-3 characters each: ~150 faces detected (166 measured), above the demo's minimum.
    assert params.validation.min_count == 50
    assert (work / ".dvc").is_dir() and (work / "dvc.yaml").read_text() == (ROOT / "dvc.yaml").read_text()
    assert (work / "stages" / "train.py").is_file() and not (work / "mlflow.db").exists()
    assert params.model == params_with().model  # the default architecture, just trained for less
