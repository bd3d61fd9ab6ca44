"""The translation benchmark (bench/translate.py) and its reference, the plain CycleGAN of bench/plain_cyclegan.py,
on tiny synthetic domains: the nets have the paper's sizes, training is seeded and learns, and the budget loop
writes one CSV row per budget, computing the fixed sets' features once."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import translate as translate_bench  # noqa: E402
from budgets import cpu_model, read_rows, run_label  # noqa: E402
from plain_cyclegan import ImagePool, PlainCycleGAN, build_discriminator, build_generator  # noqa: E402
from translate import (  # noqa: E402
    COLUMNS,
    PLOT,
    REFERENCES,
    CachedFeatures,
    Clock,
    Contender,
    EvalSets,
    Progress,
    cached_faces,
    measure,
    project_contender,
    reference_contender,
    train_until,
)

from anime_avatar.artifacts.torchfile import load_tensors, save_tensors  # noqa: E402
from anime_avatar.core.params import TranslateParams  # noqa: E402
from anime_avatar.translate.training import TranslateBatches  # noqa: E402
from tests.conftest import params_with  # noqa: E402

SIZE = 32


def count(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def domain(colour: tuple[int, int, int], n: int, seed: int) -> np.ndarray:
    """``n`` noisy images of one colour at varied brightness: two such sets are two easily told domains."""
    rng = np.random.default_rng(seed)
    base = np.array(colour, dtype=float)[None, None, None] * rng.uniform(0.6, 1.0, (n, 1, 1, 1))
    return np.clip(base + rng.normal(0, 20, (n, SIZE, SIZE, 3)), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def batches() -> TranslateBatches:
    return TranslateBatches(domain((220, 60, 40), 8, 0), domain((40, 80, 220), 8, 1))


def test_the_nets_have_the_papers_shapes_and_sizes():
    # The paper's 256 px nets (ngf 64, 9 blocks; the 70x70 PatchGAN) have the official implementation's
    # 11,378,179 and 2,764,737 weights, and the critic judges a 30x30 map of patches.
    assert count(build_generator(64, 9)) == 11_378_179
    assert count(build_discriminator(64)) == 2_764_737
    g, d = build_generator(8, 2), build_discriminator(8)
    images = g(torch.rand(2, 3, SIZE, SIZE) * 2 - 1)
    assert images.shape == (2, 3, SIZE, SIZE) and images.abs().max() <= 1
    assert d(images).shape == (2, 1, 2, 2)
    with pytest.raises(ValueError, match="at least 32 px"):
        PlainCycleGAN(16)


def test_training_is_seeded_and_lowers_the_cycle_loss(batches):
    a, b = PlainCycleGAN(SIZE, 8, 2, seed=3, ndf=8, batch_size=2), PlainCycleGAN(SIZE, 8, 2, seed=3, ndf=8)
    first = [a.step(*batches.batch(0, i, 2)) for i in range(2)]
    assert first == [b.step(*batches.batch(0, i, 2)) for i in range(2)]
    assert set(first[0]) == {"loss_g", "loss_d", "adv", "cycle", "identity"}
    cycle = [h["cycle"] for h in first] + [a.step(*batches.batch(0, i, 2))["cycle"] for i in range(2, 30)]
    assert a.n_steps == 30
    assert np.mean(cycle[-3:]) < 0.6 * np.mean(cycle[:3])
    out = a.translate(domain((220, 60, 40), 3, 5))
    assert out.shape == (3, SIZE, SIZE, 3) and out.dtype == np.uint8


def test_the_pool_fills_then_swaps_half_the_fakes():
    pool = ImagePool(4, torch.Generator().manual_seed(0))
    first = torch.arange(4.0).reshape(4, 1, 1, 1)
    assert torch.equal(pool.query(first), first)  # filling: D sees the new fakes
    new = torch.arange(10.0, 210.0).reshape(200, 1, 1, 1)
    returned = torch.cat([pool.query(fake[None]) for fake in new])
    older = returned < new  # about half the time D gets a stored, older fake instead of the new one
    assert 0.35 < older.float().mean() < 0.65
    assert set(returned[older].tolist()) & {0.0, 1.0, 2.0, 3.0}  # the first fakes among them
    assert torch.equal(ImagePool(0, torch.Generator()).query(first), first)


def eval_sets() -> EvalSets:
    return EvalSets(domain((200, 150, 120), 10, 7), domain((40, 80, 220), 10, 8), domain((40, 80, 220), 10, 9))


def colour_features(images: np.ndarray) -> np.ndarray:
    """4 features in place of Inception's: mean colour and contrast."""
    x = images.reshape(len(images), -1, 3).astype(float)
    return np.concatenate([x.mean(1), x.std(1).mean(1, keepdims=True)], axis=1)


def fake_cpu_clock(monkeypatch) -> dict[str, Contender]:
    """CPU time as 0.125 s per training step of ``clock["contender"]`` (exact in binary): on a loaded machine
    the first steps' real CPU time (spinning threads counted) reached 20 s, past both budgets."""
    clock: dict[str, Contender] = {}
    monkeypatch.setattr(translate_bench.time, "process_time", lambda: 0.125 * clock["contender"].step())
    return clock


def tiny_translate() -> TranslateParams:
    return params_with({"translate": {"image_size": SIZE, "channels": 8, "n_blocks": 2, "batch_size": 2,
                                      "device": "cpu", "threads": 1}}).translate  # fmt: skip


def test_both_models_run_the_budget_loop_and_write_a_row_per_budget(batches, tmp_path, monkeypatch):
    current = fake_cpu_clock(monkeypatch)
    extracted: list[int] = []

    def extract(images: np.ndarray) -> np.ndarray:
        extracted.append(len(images))
        return colour_features(images)

    looked: list[int] = []
    finds_face = cached_faces(lambda image: looked.append(1) or bool(image.mean() < 128))
    cfg = tiny_translate().model_copy(update={"ema": 0.0})  # one curve each: the average has its own test
    gan = PlainCycleGAN(SIZE, 8, 2, seed=0, ndf=8)
    budgets = [0.02, 0.05]  # CPU-minutes: 1.2 s and 3 s: 5 steps, then 5 to land on 1.2 s, then 14 to 3 s
    for label, contender in (("project", project_contender(cfg, batches)),
                             ("plain", reference_contender(gan, batches, seed=0))):  # fmt: skip
        current["contender"] = contender
        features = CachedFeatures(extract)
        extracted.clear()
        rows = measure(label, contender, budgets, eval_sets(), tmp_path, features.scorer, finds_face,
                       eval_size=SIZE, timing_repeats=1)  # fmt: skip
        assert [row["step"] for row in rows] == [10, 24]
        # The test anime, the photos and the reference once, each budget's translations once.
        assert extracted == [10] * 5
        with open(tmp_path / f"{label}.csv", newline="") as f:
            written = list(csv.DictReader(f))
        assert list(written[0]) == COLUMNS and [r["label"] for r in written] == [label, label]
        for row, budget in zip(rows, budgets, strict=True):
            assert row["cpu_minutes"] >= round(budget, 2) and row["images_seen"] == row["step"] * contender.batch_size
            assert np.isfinite([row["kid_x100"], row["fid"], row["structure"], row["seconds_per_avatar"]]).all()
            assert 0 <= row["face_rate"] <= 1
            assert (tmp_path / f"{label}-{budget:g}min.png").stat().st_size > 0
        assert len(contender.history) == rows[-1]["step"]
    assert looked.count(1) == 10 + 10 + 2 * 2 * 10  # photos and reference once; 4 translated sets
    assert (tmp_path / PLOT).stat().st_size > 0 and (tmp_path / REFERENCES).exists()


def test_a_run_with_a_weight_average_writes_a_curve_for_the_nets_and_one_for_the_average(
    batches, tmp_path, monkeypatch
):
    assert translate_bench.variant_label("project-cam-seed2", "ema") == "project-cam-ema-seed2"
    assert translate_bench.variant_label("project-cam", "ema") == "project-cam-ema"
    assert translate_bench.variant_label("project-cam-seed2", "") == "project-cam-seed2"
    current = fake_cpu_clock(monkeypatch)
    cfg = tiny_translate().model_copy(update={"ema": 0.9})
    current["contender"] = contender = project_contender(cfg, batches)
    rows = measure("project-seed2", contender, [0.02, 0.05], eval_sets(), tmp_path,
                   CachedFeatures(colour_features).scorer, cached_faces(lambda image: bool(image.mean() < 128)),
                   eval_size=SIZE, timing_repeats=1)  # fmt: skip
    assert [(row["label"], row["step"]) for row in rows] == [
        ("project-seed2", 10),
        ("project-ema-seed2", 10),
        ("project-seed2", 24),
        ("project-ema-seed2", 24),
    ]
    by_label = {label: read_rows(tmp_path / f"{label}.csv") for label in ("project-seed2", "project-ema-seed2")}
    assert [[int(row["step"]) for row in written] for written in by_label.values()] == [[10, 24], [10, 24]]
    # Two models, two translations: the average's KID differs from the nets' at the same step.
    assert rows[0]["kid_x100"] != rows[1]["kid_x100"]
    assert (tmp_path / "project-ema-seed2-0.05min.png").stat().st_size > 0
    assert set(translate_bench.seed_groups(translate_bench.read_runs(tmp_path))) == {"project", "project-ema"}


def test_train_until_lands_on_the_budget(batches):
    gan = PlainCycleGAN(SIZE, 8, 2, seed=0, ndf=8)
    contender, clock = reference_contender(gan, batches, seed=0), Clock()
    train_until(contender, 0.2, clock)
    assert clock.cpu_used >= 0.2 and gan.n_steps == len(contender.history) >= 5
    steps = gan.n_steps
    train_until(contender, 0.2, clock)  # already there
    assert gan.n_steps == steps


def same_tensors(first: dict, second: dict) -> bool:
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_the_plain_cyclegan_resumes_exactly_from_a_weights_only_file(batches, tmp_path):
    # A pool of 2 is full after 2 steps: later steps swap fakes with the pools' random stream, which resumes too.
    whole, first = (PlainCycleGAN(SIZE, 8, 2, seed=1, ndf=8, pool_size=2) for _ in range(2))
    losses = [whole.step(*batches.batch(1, i, 1)) for i in range(6)]
    for i in range(3):
        first.step(*batches.batch(1, i, 1))
    save_tensors(tmp_path / "plain.pt", first.state_dict())
    resumed = PlainCycleGAN(SIZE, 8, 2, seed=9, ndf=8, pool_size=2)  # other weights and pool draws until loaded
    resumed.load_state_dict(load_tensors(tmp_path / "plain.pt", "plain CycleGAN state"))
    assert resumed.n_steps == 3 and len(resumed.pool_a.images) == 2
    assert [resumed.step(*batches.batch(1, i, 1)) for i in range(3, 6)] == losses[3:]
    assert all(same_tensors(getattr(whole, n).state_dict(), getattr(resumed, n).state_dict()) for n in whole.NETS)


def test_a_resumed_benchmark_run_continues_exactly_where_it_stopped(batches, tmp_path, monkeypatch):
    current = fake_cpu_clock(monkeypatch)
    # The default weight average on: the nets and their average both resume (two curves, "project-ema").
    cfg, fingerprint = tiny_translate(), {"model": "project", "settings": {"seed": 0}}
    assert cfg.ema > 0

    def run(folder: str, budgets: list[float], resume: bool, fp: dict = fingerprint) -> tuple[Contender, list]:
        current["contender"] = contender = project_contender(cfg, batches)
        progress = Progress(tmp_path / folder / "checkpoints/project.pt", fp)
        rows = measure("project", contender, budgets, eval_sets(), tmp_path / folder,
                       CachedFeatures(colour_features).scorer, cached_faces(lambda image: bool(image.mean() < 128)),
                       eval_size=SIZE, timing_repeats=1, progress=progress, resume=resume)  # fmt: skip
        return contender, rows

    whole, expected = run("whole", [0.02, 0.05], resume=False)
    _, first = run("parts", [0.02], resume=False)
    assert [(row["label"], row["step"]) for row in first] == [("project", 10), ("project-ema", 10)]
    resumed, rows = run("parts", [0.02, 0.05], resume=True)

    def untimed(rows: list[dict]) -> list[dict]:
        return [{k: v for k, v in row.items() if k != "seconds_per_avatar"} for row in rows]

    assert [row["step"] for row in rows] == [10, 10, 24, 24] and untimed(rows) == untimed(expected)
    assert resumed.history == whole.history and len(resumed.history) == 24
    assert same_tensors(resumed.snapshot()["nets"], whole.snapshot()["nets"])
    averages = resumed.snapshot()["averages"]
    for name, average in whole.snapshot()["averages"].items():
        assert same_tensors(averages[name]["model"], average["model"]) and averages[name]["step"] == average["step"]
    for label in ("project", "project-ema"):
        with open(tmp_path / f"parts/{label}.csv", newline="") as f:
            assert [int(r["step"]) for r in csv.DictReader(f)] == [10, 24]

    with pytest.raises(SystemExit, match=r"--resume: .*made by another run \(it differs in settings\)"):
        run("parts", [0.1], resume=True, fp={"model": "project", "settings": {"seed": 1}})
    # main adds cpu_model(): a file saved without it is refused as unchecked, one from another CPU as another run
    with pytest.raises(SystemExit, match=r"saved before runs recorded their cpu, so it cannot be told whether"):
        run("parts", [0.1], resume=True, fp={**fingerprint, "cpu": "AMD EPYC"})
    run("cpu", [0.02], resume=False, fp={**fingerprint, "cpu": "Intel Xeon"})
    with pytest.raises(SystemExit, match=r"made by another run \(it differs in cpu\)"):
        run("cpu", [0.1], resume=True, fp={**fingerprint, "cpu": "AMD EPYC"})
    with pytest.raises(SystemExit, match=r"--resume: no checkpoint at .*elsewhere/checkpoints/project.pt"):
        run("elsewhere", [0.1], resume=True)
    (tmp_path / "elsewhere/checkpoints").mkdir(parents=True)
    (tmp_path / "elsewhere/checkpoints/project.pt").write_text("not a checkpoint")
    with pytest.raises(
        SystemExit, match=r"--resume: .*: not a readable benchmark checkpoint \(not a file written by torch.save\)"
    ):
        run("elsewhere", [0.1], resume=True)


def test_a_runs_label_always_carries_its_seed():
    # The -seedN suffix groups a curve's seeds, so a label given without it gets it, as the default does.
    assert run_label("", "plain-cyclegan", 0) == "plain-cyclegan"
    assert run_label("", "plain-cyclegan", 2) == "plain-cyclegan-seed2"
    assert run_label("project-none-c32b1", "project", 2) == "project-none-c32b1-seed2"
    assert run_label("project-none-c32b1-seed3", "project", 3) == "project-none-c32b1-seed3"
    assert run_label("project-seedling", "project", 0) == "project-seedling"
    with pytest.raises(ValueError, match="'cam-seed3' names seed 3 but the run's seed is 2"):
        run_label("cam-seed3", "project", 2)


def test_the_cpu_model_is_read_from_cpuinfo_and_unknown_says_so(tmp_path):
    # A resumed run must be on the CPU that started it, so the model goes into the run's fingerprint.
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\nflags\t: fpu\n")
    assert cpu_model(info) == "AMD EPYC"
    info.write_text("processor\t: 0\nflags\t: fpu\n")
    assert cpu_model(info) == "?"
    info.write_text("processor\t: 0\nmodel name\t: \nflags\t: fpu\n")  # bench/reported/studio saw this: ""
    assert cpu_model(info) == "?"
    assert cpu_model(tmp_path / "absent") == "?"


def test_a_new_run_does_not_replace_an_earlier_runs_results(tmp_path, monkeypatch, capsys):
    def main(*args: str) -> None:
        # --data is missing: each refusal below must come before any data is read.
        monkeypatch.setattr(sys, "argv", ["translate.py", "--data", str(tmp_path / "absent"), "--out", str(tmp_path),
                                          *args])  # fmt: skip
        translate_bench.main()

    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints/project-seed2.pt").write_bytes(b"hours of training")
    with pytest.raises(SystemExit, match=r"checkpoints/project-seed2.pt exists: a run of this label and --out wrote "
                                         r"it; --resume continues that run, --overwrite starts it over"):  # fmt: skip
        main("--seed", "2")
    (tmp_path / "cam-seed2.csv").write_text("label\n")
    with pytest.raises(SystemExit, match=r"cam-seed2.csv exists"):
        main("--label", "cam", "--seed", "2")
    assert (tmp_path / "checkpoints/project-seed2.pt").read_bytes() == b"hours of training"
    assert (tmp_path / "cam-seed2.csv").read_text() == "label\n"
    for args, message in ((["--resume", "--overwrite"], "--resume continues a run and --overwrite starts it over"),
                          (["--label", "cam-seed3", "--seed", "2"], "--label: 'cam-seed3' names seed 3")):  # fmt: skip
        with pytest.raises(SystemExit):
            main(*args)
        assert message in capsys.readouterr().err


def test_seeds_of_one_experiment_are_summarised_by_mean_and_range(tmp_path):
    def row(label: str, minutes: float, kid: float, faces: float) -> dict:
        return {"label": label, "cpu_minutes": minutes, "step": 10, "images_seen": 10, "kid_x100": kid, "fid": 1.0,
                "face_rate": faces, "structure": 0.5, "seconds_per_avatar": 0.1}  # fmt: skip

    runs = {
        "plain-cyclegan": [row("plain-cyclegan", 30.0, 36.0, 0.8), row("plain-cyclegan", 60.01, 30.0, 1.0)],
        "plain-cyclegan-seed1": [row("plain-cyclegan-seed1", 30.09, 38.0, 0.9)],
        "plain-cyclegan-seed12": [row("plain-cyclegan-seed12", 30.0, 31.0, 0.7)],
        "project-cam": [row("project-cam", 30.0, 20.0, 1.0)],  # one seed: no spread to report
        "project-seedling": [row("project-seedling", 30.0, 20.0, 1.0)],  # not a seed suffix
        "project-cam-mask-floor-c32b1": [row("project-cam-mask-floor-c32b1", 30.0, 25.0, 0.9)],
    }
    assert translate_bench.curve_group("plain-cyclegan-seed12") == "plain-cyclegan"
    assert translate_bench.curve_group("project-seedling") == "project-seedling"
    assert translate_bench.seed_groups(runs) == {
        "plain-cyclegan": ["plain-cyclegan", "plain-cyclegan-seed1", "plain-cyclegan-seed12"],
        "project-cam": ["project-cam"], "project-cam-mask-floor-c32b1": ["project-cam-mask-floor-c32b1"],
        "project-seedling": ["project-seedling"],
    }  # fmt: skip
    spreads = translate_bench.seed_spreads(runs)
    # 30 CPU-minutes: three seeds (30.0, 30.09 and 30.0 are one budget); 60: only seed 0 got there.
    assert [(s.group, s.cpu_minutes, s.seeds) for s in spreads] == [
        ("plain-cyclegan", 30.0, 3),
        ("plain-cyclegan", 60.0, 1),
    ]
    assert (spreads[0].kid_mean, spreads[0].kid_min, spreads[0].kid_max) == (35.0, 31.0, 38.0)
    assert spreads[0].face_rate_mean == 0.8 and spreads[1].kid_mean == 30.0

    for label, rows in runs.items():
        translate_bench.write_rows(tmp_path / f"{label}.csv", rows, COLUMNS)
    report = translate_bench.report(tmp_path)
    lines = report.splitlines()
    end = lines[0].index("CPU-min") + len("CPU-min")  # columns line up under the longest label
    assert sorted(float(line[end - 6 : end]) for line in lines[1:8]) == [30.0] * 5 + [30.1, 60.0]
    assert any(line.split() == ["plain-cyclegan", "30.0", "3", "35.00", "31.00", "-", "38.00", "0.80"]
               for line in lines)  # fmt: skip
    translate_bench.draw_plot(tmp_path)
    assert (tmp_path / PLOT).read_bytes()[:4] == b"\x89PNG"
    (tmp_path / "plain-cyclegan-seed1.csv").unlink()
    (tmp_path / "plain-cyclegan-seed12.csv").unlink()
    assert translate_bench.seed_table(translate_bench.read_runs(tmp_path)) == ""


def test_the_step_benchmarks_reference_computes_the_same_norms_and_is_put_back():
    import translate_step

    from anime_avatar.translate import nets

    project = nets._instance_layer_mix
    x, rho = torch.randn(2, 4, 6, 6) * 2 + 1, torch.tensor([0.0, 0.3, 0.7, 1.0])
    torch.testing.assert_close(translate_step.written_out_mix(x, rho), project(x, rho), rtol=1e-5, atol=1e-5)
    with translate_step.mixing_with(translate_step.written_out_mix):
        assert nets._instance_layer_mix is translate_step.written_out_mix
    assert nets._instance_layer_mix is project
