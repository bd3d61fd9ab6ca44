"""The command line: --version, global options anywhere, a description per command, params as YAML."""

from __future__ import annotations

import pytest
import yaml

from anime_avatar import __version__
from anime_avatar.core.params import merge
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


def test_make_demo_replaces_only_an_earlier_demo_workspace(tmp_path):
    from pipelines import demo

    notes = tmp_path / "work" / "notes.txt"
    notes.parent.mkdir()
    notes.write_text("unpushed work")
    not_a_demo = "it is not a demo workspace (no .anime-avatar-demo in it; an old demo's folder: remove it yourself)"
    for folder, reason in ((notes.parent, not_a_demo),
                           (notes, "it is not a folder"), (ROOT, "it holds the project itself"),
                           (ROOT / "stages" / "..", "it holds the project itself"),
                           (ROOT.parent, "it holds the project itself")):  # fmt: skip
        with pytest.raises(SystemExit) as refused:
            demo.prepare(folder)
        assert str(refused.value) == f"demo: --dir {folder}: {reason}; name a new or empty folder"
    assert notes.read_text() == "unpushed work" and (ROOT / "dvc.yaml").is_file()

    (tmp_path / "empty").mkdir()
    work = demo.prepare(tmp_path / "empty")
    (work / "leftover.txt").write_text("from the first demo")
    assert demo.prepare(work) == work and not (work / "leftover.txt").exists()  # an earlier demo is replaced


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


def test_make_demo_runs_on_the_offline_data_whatever_the_projects_params_read(tmp_path, monkeypatch):
    from anime_avatar.core.params import load_params
    from pipelines import demo

    project = tmp_path / "project"
    project.mkdir()
    own = merge(yaml.safe_load((ROOT / "params.yaml").read_text()), {
        "data": {"source": "local", "path": "portraits"}, "photos": {"source": "url", "url": "https://example.org/p.zip"},
        "stylize": {"style_path": "../paintings"}, "stylize_eval": {"photos": ["me.jpg"], "content_path": "mine"},
        "translate": {"photos": "../selfies", "anime": "../anime"},
        "translate_eval": {"photos": "a", "anime": "b", "reference": "c"},
    })  # fmt: skip
    (project / "params.yaml").write_text(yaml.safe_dump(own, sort_keys=False))
    for name in demo.COPIED:
        (project / name).symlink_to(ROOT / name)
    monkeypatch.setattr(demo, "ROOT", project)
    params = load_params(demo.prepare(tmp_path / "demo") / "params.yaml")
    assert (params.data.source, params.photos.source) == ("synthetic", "synthetic")
    assert (params.stylize.style_path, params.stylize_eval.style_path) == ("data/raw", "data/raw")
    assert (params.stylize_eval.content_path, params.stylize_eval.photos) == ("data/faces", [])
    assert (params.translate.photos, params.translate.anime) == ("data/photos", "data/faces")
    t = params.translate_eval
    assert (t.photos, t.anime, t.reference) == ("data/photos", "data/faces", "data/faces")


def test_ctrl_c_outside_a_stage_is_one_line_and_exit_130(monkeypatch, caplog):
    """Ctrl-C while `pipeline` started its temporary Prefect server printed a 39-line traceback."""
    from anime_avatar import cli

    def interrupted(path):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "load_params", interrupted)
    with pytest.raises(SystemExit) as exit_:
        cli.main(["params"])
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert exit_.value.code == 130 and errors == ["interrupted"]
