"""The training loop: exact resume, interruption, distributed runs, determinism."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
import torch

from anime_avatar.artifacts.torchfile import load_tensors, save_tensors
from anime_avatar.core.device import resolve_device
from anime_avatar.core.errors import UserError
from anime_avatar.core.loops import TrainingInterrupted
from anime_avatar.gan.nets import net_config
from anime_avatar.gan.training import Hooks, batch_indices, build_state, train
from anime_avatar.nn import precision
from anime_avatar.nn.distributed import DistInfo
from anime_avatar.nn.precision import autocast_for
from tests.conftest import BIN, ROOT, params_with, run

IMAGES = np.random.default_rng(0).integers(0, 256, (48, 32, 32, 3), dtype=np.uint8)


def tiny(**train_changes) -> dict:
    return {
        "model": {"arch": "sagan", "channels": 8, "attention": [16], "z_dim": 16},
        "train": {"steps": 6, "batch_size": 8, "device": "cpu", "log_every": 1, "checkpoint_every": 100,
                  "sample_every": 100, **train_changes},
    }  # fmt: skip


def fit(changes: dict, checkpoint, **kwargs):
    """Train on IMAGES with the project's params plus ``changes``."""
    params = params_with(changes)
    return train(params.model, params.train, IMAGES, checkpoint, **kwargs)


def weights(state) -> dict[str, torch.Tensor]:
    named = {}
    for prefix, module in (("g", state.generator), ("d", state.discriminator), ("ema", state.ema.model)):
        named.update({f"{prefix}.{k}": v for k, v in module.state_dict().items()})
    return named


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


def assert_resume_is_exact(changes: dict, tmp_path):
    """3 steps, a stop, 3 more from the checkpoint: the same run as 6 steps straight. Returns the straight run."""
    straight = fit(changes, tmp_path / "straight.pt")
    first = fit(changes, tmp_path / "stopped.pt", stop_after=3)
    assert first.step == 3 and (tmp_path / "stopped.pt").is_file()
    resumed = fit(changes, tmp_path / "stopped.pt")
    assert resumed.step == straight.step == 6
    assert_same(weights(straight), weights(resumed))
    assert [h["step"] for h in resumed.history] == list(range(1, 7))
    assert resumed.history == straight.history
    return straight


def test_a_run_resumed_by_other_processes_reports_all_its_training_time(tmp_path, ticking_clock, caplog):
    # The clock ticks a second per step: 3 steps, then 3 more in a resumed process, then a process with nothing
    # left to do, which used to report its own few seconds as the run's training time.
    assert fit(tiny(), tmp_path / "ck.pt", stop_after=3).seconds == 3.0
    assert fit(tiny(), tmp_path / "ck.pt").seconds == 6.0
    finished = fit(tiny(), tmp_path / "ck.pt")
    assert finished.step == 6 and finished.seconds == 6.0
    # A checkpoint written before checkpoints held the time resumes all the same, counting from the new process.
    payload = load_tensors(tmp_path / "ck.pt", "checkpoint")
    del payload["seconds"]
    save_tensors(tmp_path / "old.pt", payload | {"step": 3})
    caplog.set_level("INFO")
    resumed = fit(tiny(), tmp_path / "old.pt")
    assert resumed.step == 6 and resumed.seconds == 3.0
    assert "does not hold the time trained so far" in caplog.text


@pytest.mark.parametrize(("arch", "loss"), [("sagan", "hinge"), ("dcgan", "wgan-gp"), ("sagan", "bce")])
def test_k_steps_resume_k_steps_equals_2k_steps(tmp_path, arch, loss):
    changes = tiny(loss=loss)
    changes["model"]["arch"] = arch
    assert_resume_is_exact(changes, tmp_path)


def test_amp_autocasts_to_bf16_only_where_the_device_has_it(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    context = autocast_for(cpu, True)
    assert isinstance(context, torch.autocast) and context.fast_dtype == torch.bfloat16
    assert not isinstance(autocast_for(cpu, False), torch.autocast)
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)  # emulated bf16 is slower than float32
    assert not isinstance(autocast_for(cpu, True), torch.autocast)
    assert not isinstance(autocast_for(torch.device("mps"), True), torch.autocast)


def test_amp_on_a_gpu_is_bf16_only_from_ampere_on_and_asks_the_training_gpu(monkeypatch):
    """torch.cuda.is_bf16_supported() says yes for a T4 or V100 too (emulated bf16, slower than float32), and
    looks at the current device rather than train.device."""
    from types import SimpleNamespace

    from anime_avatar.nn.precision import training_precision

    asked: list[int] = []
    majors = {0: 8, 1: 7}  # cuda:0 an A100, cuda:1 a V100

    def properties(index: int) -> SimpleNamespace:
        asked.append(index)
        return SimpleNamespace(major=majors[index])

    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "get_device_properties", properties)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert training_precision(torch.device("cuda", 1), True) == "float32" and asked == [1]
    assert training_precision(torch.device("cuda", 0), True) == "bfloat16"
    assert training_precision(torch.device("cuda", 0), False) == "float32"


def test_bf16_training_on_the_cpu_resumes_exactly(tmp_path, monkeypatch):
    # Forced on, so that the bf16 path is tested on CPUs without bf16 instructions too (there it is emulated).
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    straight = assert_resume_is_exact(tiny(), tmp_path)
    float32 = fit(tiny(amp=False), tmp_path / "c.pt")
    w32, w16 = weights(float32), weights(straight)
    assert all(v.dtype == w32[k].dtype for k, v in w16.items()), "weights stay float32 under autocast"
    assert any(not torch.equal(w32[k], w16[k]) for k in w32), "train.amp changed nothing: no autocast on the CPU"
    # The same params on a CPU without bf16 instructions train in float32: that checkpoint is not resumed here.
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    fit(tiny(), tmp_path / "d.pt", stop_after=3)
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert_same(weights(straight), weights(fit(tiny(), tmp_path / "d.pt")))


def test_training_changes_weights_and_seed_matters(tmp_path):
    a = fit(tiny(steps=2), tmp_path / "a.pt")
    b = fit(tiny(steps=2), tmp_path / "b.pt")
    c = fit(tiny(steps=2, seed=1), tmp_path / "c.pt")
    init = fit(tiny(steps=2), tmp_path / "a.pt")  # finished checkpoint: no new steps
    assert_same(weights(a), weights(b))
    assert_same(weights(a), weights(init))
    wa, wc = weights(a), weights(c)
    assert any(not torch.equal(wa[k], wc[k]) for k in wa)


def test_training_from_the_shards_in_place_is_the_run_on_the_whole_array(tmp_path, monkeypatch):
    """The train stage reads its set in place (memory-mapped shards, each batch gathered from them) instead of
    one copy of the whole set in memory: the same run to the last bit, and on the CPU never a whole copy."""
    from anime_avatar.artifacts.trainset import TrainImages, Variant, open_train_images, write_train_set

    def whole_copy(*args, **kwargs):
        raise AssertionError("the whole training set was copied into memory")

    monkeypatch.setattr(TrainImages, "__array__", whole_copy)

    (tmp_path / "train").mkdir()
    write_train_set(tmp_path / "train", IMAGES, [Variant(f"f{i}", 0) for i in range(len(IMAGES))], 20, 1)
    in_place = open_train_images(tmp_path / "train")
    assert len(in_place) == len(IMAGES) and in_place.shape == IMAGES.shape  # three shards: 20, 20, 8
    params = params_with(tiny(steps=3))
    from_shards = train(params.model, params.train, in_place, tmp_path / "shards.pt")
    assert_same(weights(fit(tiny(steps=3), tmp_path / "array.pt")), weights(from_shards))


def test_checkpoint_of_other_params_is_not_resumed(tmp_path):
    fit(tiny(steps=2), tmp_path / "ck.pt")
    other = fit(tiny(steps=2, lr_g=0.001), tmp_path / "ck.pt")
    fresh = fit(tiny(steps=2, lr_g=0.001), tmp_path / "fresh.pt")
    assert_same(weights(other), weights(fresh))


def test_more_steps_continue_a_finished_run(tmp_path):
    first = fit(tiny(steps=3, log_every=2), tmp_path / "ck.pt")
    assert [row["step"] for row in first.history] == [2, 3]  # the last step is logged, on the schedule or not
    longer = fit(tiny(steps=6, log_every=2), tmp_path / "ck.pt")
    straight = fit(tiny(steps=6, log_every=2), tmp_path / "s.pt")
    assert_same(weights(longer), weights(straight))
    # Step 3's row was logged only because it was the last step then: the loss curve is the uninterrupted run's.
    assert longer.history == straight.history and [row["step"] for row in longer.history] == [2, 4, 6]


def test_fewer_steps_than_the_checkpoint_start_afresh(tmp_path):
    # The generator must match params.yaml: a longer-trained checkpoint is not "resumed" backwards.
    fit(tiny(steps=5), tmp_path / "ck.pt")
    shorter = fit(tiny(steps=3), tmp_path / "ck.pt")
    straight = fit(tiny(steps=3), tmp_path / "s.pt")
    assert shorter.step == 3
    assert_same(weights(shorter), weights(straight))


def test_sigterm_checkpoints_and_stops(tmp_path):
    def on_log(step, losses):
        if step == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(TrainingInterrupted, match="at step 2; checkpoint"):
        fit(tiny(), tmp_path / "ck.pt", hooks=Hooks(on_log=on_log))
    resumed = fit(tiny(), tmp_path / "ck.pt")
    straight = fit(tiny(), tmp_path / "s.pt")
    assert_same(weights(resumed), weights(straight))
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_hooks_receive_losses_and_sample_grids(tmp_path):
    logged, grids = [], []
    hooks = Hooks(on_log=lambda s, losses: logged.append((s, losses)), on_sample=lambda s, g: grids.append((s, g)))
    fit(tiny(steps=4, log_every=2, sample_every=2), tmp_path / "ck.pt", hooks=hooks)
    assert [s for s, _ in logged] == [2, 4]
    assert all(np.isfinite(list(v.values())).all() and set(v) == {"loss_d", "loss_g"} for _, v in logged)
    assert [s for s, _ in grids] == [2, 4]
    assert grids[0][1].shape == (64, 3, 32, 32) and grids[0][1].dtype == torch.uint8


def test_batch_indices_resume_mid_epoch_and_split_ranks():
    full = batch_indices(20, 4, seed=0, info=DistInfo(), start_step=0)
    first = [next(full) for _ in range(12)]
    later = batch_indices(20, 4, seed=0, info=DistInfo(), start_step=7)
    assert [next(later) for _ in range(5)] == first[7:12]
    assert sorted(sum(first[:5], [])) == list(range(20))  # one epoch sees every image once
    r0 = next(batch_indices(20, 4, 0, DistInfo(0, 2), 0))
    r1 = next(batch_indices(20, 4, 0, DistInfo(1, 2), 0))
    assert not set(r0) & set(r1)
    with pytest.raises(UserError, match="larger than the training set"):
        next(batch_indices(3, 4, 0, DistInfo(), 0))


def test_device_resolution():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in {"cpu", "cuda", "mps"}
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no CUDA device"):
            resolve_device("cuda")


@pytest.mark.slow
def test_two_gloo_processes_hold_identical_weights(tmp_path):
    run([str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", str(ROOT / "tests" / "ddp_worker.py"),
         str(tmp_path)], ROOT)  # fmt: skip
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=False)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=False)
    assert r0["step"] == r1["step"] == 3
    for part in ("generator", "discriminator", "ema"):
        assert_same(r0[part], r1[part])
    params = params_with(tiny())
    config = net_config(params.model, 32)
    initial = build_state(config, params.train, torch.device("cpu")).generator.state_dict()
    assert any(not torch.equal(v, initial[k]) for k, v in r0["generator"].items()), "DDP steps changed nothing"


@pytest.mark.slow
def test_a_signal_reaching_the_ranks_at_different_steps_still_leaves_rank_0s_checkpoint(tmp_path):
    """Rank 1 gets SIGTERM in its step 3, rank 0 in its step 5. Before: rank 1 stopped after step 3 (saying the
    checkpoint was saved), rank 0 died waiting for it in the next all-reduce, and no checkpoint was written."""
    proc = run([str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", str(ROOT / "tests" / "ddp_worker.py"),
                str(tmp_path), "signals"], ROOT, check=False)  # fmt: skip
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert f"stopped by signal 15 at step 5; checkpoint {tmp_path / 'last.pt'} saved" in out
    assert f"stopped by signal 15 at step 5 with rank 0, which saved checkpoint {tmp_path / 'last.pt'}" in out
    saved = torch.load(tmp_path / "last.pt", weights_only=True)
    assert saved["step"] == 5 and saved["fingerprint"]["processes"] == 2


def test_plain_generator_computes_the_same_images(tmp_path):
    import pickle

    from anime_avatar.gan.inference import plain_generator

    state = fit(tiny(steps=2), tmp_path / "ck.pt")
    ema = state.ema.model.eval()
    plain = pickle.loads(pickle.dumps(plain_generator(ema)))
    z = torch.randn(4, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(plain(z), ema(z), atol=1e-5)
