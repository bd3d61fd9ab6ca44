"""The layout holds: dvc.yaml lists each stage's real code and params, the library sits below the flows,
artifact paths have one owner, and no module imports itself in a circle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from anime_avatar.artifacts import checkpoint, faces, generator, raw, reports, run, stylizer, trainset, translator
from anime_avatar.core.params import merge, semantic_keys
from tests.conftest import ROOT, make_project
from tests.conftest import run as run_cmd
from tests.importgraph import closure, cycles, graph, imported_modules

DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
CODE_ROOTS = ("anime_avatar/", "stages/", "pipelines/")


def code_deps(stage: str) -> set[str]:
    return {d for d in DVC[stage]["deps"] if d.startswith(CODE_ROOTS)}


@pytest.mark.parametrize("stage", list(DVC))
def test_each_stage_depends_on_exactly_its_import_closure(stage):
    module = DVC[stage]["cmd"].removeprefix("python -m ").replace(".", "/") + ".py"
    expected = {p.relative_to(ROOT).as_posix() for p in closure(ROOT / module)}
    listed = code_deps(stage)
    assert not expected - listed, f"dvc.yaml stage {stage} misses {sorted(expected - listed)}"
    assert not listed - expected, f"dvc.yaml stage {stage} lists files it does not import: {sorted(listed - expected)}"


def sections_read(stage_file: Path) -> set[str]:
    """The params sections a stage module touches (``params.train``, ``params.validation``...)."""
    tree = ast.parse(stage_file.read_text())
    found = {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "params"
    }
    return {"validate" if name == "validation" else name for name in found}


@pytest.mark.parametrize("stage", list(DVC))
def test_each_stage_declares_the_output_changing_keys_it_reads(stage):
    module = ROOT / (DVC[stage]["cmd"].removeprefix("python -m ").replace(".", "/") + ".py")
    expected = sorted(k for section in sections_read(module) for k in semantic_keys(section))
    assert sorted(DVC[stage].get("params", [])) == expected


def test_stages_read_only_their_own_sections():
    # Facts such as the image size come from the artifacts, not from another stage's params.
    owned = {"download": {"data"}, "detect": {"detect"}, "augment": {"augment"}, "validate": {"validate"},
             "train": {"model", "train", "tracking"}, "evaluate": {"eval"},
             "stylize_train": {"stylize", "tracking"},
             "stylize_eval": {"stylize_eval", "gatys", "photo_faces"}, "download_photos": {"photos"},
             "translate_train": {"translate", "tracking"}, "translate_eval": {"translate_eval"}}  # fmt: skip
    for stage, sections in owned.items():
        assert sections_read(ROOT / "stages" / f"{stage}.py") == sections, stage


def test_outputs_are_the_paths_the_artifact_modules_own():
    owned = {
        raw.RAW_DIR, faces.FACES_DIR, trainset.TRAIN_DIR, generator.GENERATOR, checkpoint.CHECKPOINT_DIR,
        run.RUN_FILE, reports.VALIDATION_REPORT, reports.DATA_DOCS_DIR, reports.SAMPLES_DIR, reports.SAMPLES_PNG,
        reports.TRAIN_METRICS, reports.LOSSES_CSV, reports.EVAL_METRICS,
        stylizer.STYLIZER, stylizer.STYLIZER_CHECKPOINT_DIR, stylizer.STYLIZER_RUN_FILE, reports.STYLIZE_TRAIN_METRICS,
        reports.STYLIZE_LOSSES_CSV, reports.STYLIZE_METRICS, reports.STYLIZE_DETAILS, reports.STYLIZE_TRADEOFF_CSV,
        reports.STYLIZE_SHEET,
        raw.PHOTOS_DIR, translator.TRANSLATOR, translator.TRANSLATOR_CHECKPOINT_DIR, translator.TRANSLATOR_RUN_FILE,
        reports.TRANSLATE_TRAIN_METRICS, reports.TRANSLATE_LOSSES_CSV, reports.TRANSLATE_SAMPLES_DIR,
        reports.TRANSLATE_METRICS, reports.TRANSLATE_DETAILS, reports.TRANSLATE_SHEET,
    }  # fmt: skip
    declared = set()
    for stage in DVC.values():
        for kind in ("outs", "metrics", "plots"):
            for entry in stage.get(kind, []):
                declared.add(Path(next(iter(entry)) if isinstance(entry, dict) else entry))
    assert declared == owned


def test_the_library_never_imports_the_orchestration_layer():
    offenders = [
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "anime_avatar").rglob("*.py")
        if any(name.split(".")[0] in ("pipelines", "stages") for name in imported_modules(path))
    ]
    assert not offenders


def test_no_import_cycles():
    assert cycles(graph("anime_avatar")) == []


def test_methods_do_not_import_each_other():
    # What two methods share (adversarial losses, layers, precision, images, normalisation operators, image sets,
    # faces in photos) lives below them, in anime_avatar/nn, data or metrics.
    methods = METHOD_PACKAGES
    for method in methods:
        others = tuple(f"anime_avatar.{other}" for other in methods if other != method)
        for path in (ROOT / "anime_avatar" / method).rglob("*.py"):
            assert not [m for m in imported_modules(path) if m.startswith(others)], path.relative_to(ROOT)


def test_the_shared_building_blocks_import_no_method():
    methods = tuple(f"anime_avatar.{name}" for name in ("gan", "style", "translate"))
    for path in (ROOT / "anime_avatar" / "nn").rglob("*.py"):
        assert not [m for m in imported_modules(path) if m.startswith(methods)], path.relative_to(ROOT)


def test_the_data_stages_do_not_depend_on_the_gan_code():
    for stage in ("download", "detect", "augment", "validate"):
        assert not {d for d in code_deps(stage) if d.startswith(("anime_avatar/gan/", "anime_avatar/ops/"))}, stage


def test_operational_keys_leave_train_up_to_date_and_semantic_keys_make_it_stale(tmp_path):
    work = make_project(tmp_path / "project", {})
    # Stand-ins for the stage's data and outputs let DVC record the stage without training.
    (work / "data/train").mkdir(parents=True)
    (work / "data/train/index.json").write_text("{}")
    for out in ("models/generator.pt", "models/run.json", "metrics/train.json", "plots/losses.csv"):
        (work / out).parent.mkdir(parents=True, exist_ok=True)
        (work / out).write_text("stand-in")
    for folder in ("models/checkpoints", "plots/samples"):
        (work / folder).mkdir(parents=True, exist_ok=True)
        (work / folder / "x").write_text("stand-in")
    run_cmd(["dvc", "commit", "--force", "train"], work)
    original = yaml.safe_load((work / "params.yaml").read_text())

    def status_after(changes: dict) -> str:
        (work / "params.yaml").write_text(yaml.safe_dump(merge(original, changes), sort_keys=False))
        return run_cmd(["dvc", "status", "train"], work).stdout

    assert "up to date" in status_after({})
    for operational in ({"train": {"log_every": 7}}, {"train": {"device": "cpu", "threads": 1}},
                        {"tracking": {"experiment": "renamed"}}, {"eval": {"device": "cpu"}}):  # fmt: skip
        assert "up to date" in status_after(operational), operational
    stale = status_after({"train": {"lr_g": 0.0005}})
    assert "modified:" in stale and "train.lr_g" in stale


METHOD_PACKAGES = ("gan", "style", "translate")


def _imports_of(folder: str) -> dict[str, set[str]]:
    return {path.relative_to(ROOT).as_posix(): set(imported_modules(path)) for path in (ROOT / folder).rglob("*.py")}


def test_artifacts_is_a_plain_layer_that_imports_no_method_and_no_data_code():
    # Paths, metadata and reading/writing files only: rebuilding a network from its file is its method's.
    below = tuple(f"anime_avatar.{name}" for name in (*METHOD_PACKAGES, "data", "metrics", "ops"))
    offenders = {path: sorted(m for m in mods if m.startswith(below)) for path, mods in _imports_of(
        "anime_avatar/artifacts").items()}  # fmt: skip
    assert {path: mods for path, mods in offenders.items() if mods} == {}


def test_no_stage_talks_to_mlflow_directly():
    # Every stage tracks through anime_avatar.ops.stage_run (journal, outage safety, KILLED marking).
    for path in (ROOT / "stages").glob("*.py"):
        tree = ast.parse(path.read_text())
        imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        assert not {name for name in imported if name.split(".")[0] == "mlflow"}, path.name
        assert "mlflow_client" not in path.read_text(), path.name


def test_no_benchmark_sheet_of_dataset_selfies_is_tracked():
    """bench/translate.py's ``<label>-<budget>min.png`` sheets show selfie2anime's test photos, which the
    repository never holds (research-only data); .gitignore keeps them out, this catches a forced add."""
    tracked = run_cmd(["git", "ls-files", "bench/reported"], ROOT).stdout.split()
    assert tracked, "git ls-files found nothing: not run in the repository?"
    sheets = [path for path in tracked if path.endswith("min.png")]
    assert not sheets, f"sample sheets of dataset photos are tracked: {sheets}"
