"""The shared training loop keeps what was trained when it is stopped, even by a second signal during the save."""

import json
import os
import shutil
import signal
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from worldsim.signals import signals_deferred
from worldsim.training.ema import EMA
from worldsim.training.loop import run_training


@pytest.fixture
def sigterm_interrupts():
    """As train.py: SIGTERM stops like Ctrl-C."""

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    old = signal.signal(signal.SIGTERM, handler)
    yield
    signal.signal(signal.SIGTERM, old)


def _loop(tmp_path, checkpoint, stop_at=3):
    torch.manual_seed(0)
    model = nn.Linear(2, 1)
    ema = EMA(model, 0.9)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    cfg = SimpleNamespace(lr=0.1, warmup=1, steps=100, grad_clip=1.0, log_every=1, eval_every=50, seed=0)

    def batches():
        for i in range(10**6):
            if i == stop_at:
                raise KeyboardInterrupt("Ctrl-C")  # pressed while the next batch is read
            yield torch.ones(4, 2)

    def loss_fn(net, x):
        return net(x).pow(2).mean(), {}, len(x)

    return run_training(model, ema, opt, cfg, 0, batches(), loss_fn, lambda s: ({}, {}), checkpoint,
                        tmp_path / "log.jsonl", tmp_path / "state.safetensors")


def test_a_second_signal_during_the_interrupt_save_waits_for_it(tmp_path, capsys, sigterm_interrupts):
    written = []

    def checkpoint(step, stats):
        os.kill(os.getpid(), signal.SIGTERM)  # the user presses again while the save runs
        for _ in range(1000):  # let the signal be handled mid-save
            pass
        (tmp_path / "state.safetensors").write_text(str(step))
        written.append(step)

    with pytest.raises(KeyboardInterrupt):
        _loop(tmp_path, checkpoint)
    out = capsys.readouterr()
    assert written == [3] and (tmp_path / "state.safetensors").read_text() == "3"
    assert "saved step 3" in out.out and "while saving" in out.err


def test_a_failed_save_is_not_reported_as_saved(tmp_path, capsys):
    def checkpoint(step, stats):
        raise OSError("No space left on device")

    with pytest.raises(OSError):
        _loop(tmp_path, checkpoint)
    out = capsys.readouterr().out
    assert "could NOT save step 3" in out and "saved step" not in out


def test_signals_deferred_raises_after_the_block(sigterm_interrupts):
    done = []
    with pytest.raises(KeyboardInterrupt):
        with signals_deferred("testing"):
            os.kill(os.getpid(), signal.SIGTERM)
            done.append(1)
    assert done == [1]
    assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL  # the previous handler is back


def _state(path):
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, {k: v for k, v in f.metadata().items() if k != "checksums"}


def test_a_resumed_run_equals_an_uninterrupted_one(tmp_path, carracing_data, monkeypatch):
    """Interrupted at step 3 and resumed to 6 == trained to 6 at once: weights, EMA, optimizer moments, step."""

    import worldsim.training.loop as loop

    real_log = loop.log_row

    def interrupt_once_at_3(path, row):  # Ctrl-C right after step 3's update
        real_log(path, row)
        if row.get("step") == 3 and "loss" in row and not (path.parent / "stopped").exists():
            (path.parent / "stopped").touch()
            raise KeyboardInterrupt

    def stop_and_resume(train, *args):
        monkeypatch.setattr(loop, "log_row", interrupt_once_at_3)
        with pytest.raises(KeyboardInterrupt):
            train(*args)
        monkeypatch.setattr(loop, "log_row", real_log)
        train(*args)

    from worldsim.engine.sampler import SamplerConfig
    from worldsim.models.dit import DiTConfig
    from worldsim.models.vae import VAEConfig
    from worldsim.training.dynamics_trainer import DynamicsTrainConfig, train_dynamics
    from worldsim.training.vae_trainer import VAETrainConfig, train_vae

    vae_cfg = VAEConfig(encoder_channels=(8, 16, 16), decoder_channels=(8, 16, 16), norm_groups=4, latent_channels=4)
    vae_train = VAETrainConfig(steps=6, batch_size=2, warmup=2, eval_every=100, eval_clips=2, log_every=1, heldout_every=2)
    dit_cfg = DiTConfig(latent_channels=4, latent_size=16, patch_size=4, dim=32, depth=2, heads=2, window=4)
    dyn_train = DynamicsTrainConfig(steps=6, batch_size=2, clip_length=4, warmup=2, eval_every=100, log_every=1,
                                    heldout_every=2)
    cpu = torch.device("cpu")
    once, twice = tmp_path / "once", tmp_path / "twice"
    train_vae(vae_cfg, vae_train, carracing_data, once, cpu)
    stop_and_resume(train_vae, vae_cfg, vae_train, carracing_data, twice, cpu)
    a, ma = _state(once / "vae_state.safetensors")
    b, mb = _state(twice / "vae_state.safetensors")
    ha, hb = json.loads(ma.pop("history")), json.loads(mb.pop("history"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a) and ma == mb
    # The ledger tells them apart: one process 0 -> 6, or two, 0 -> 3 and 3 -> 6.
    assert [e["steps"] for e in ha] == [[0, 6]] and [e["steps"] for e in hb] == [[0, 3], [3, 6]]
    assert [e["finished"] for e in hb] == [False, True] and hb[0]["frames"] == 3 * 2 * vae_train.clip_length
    shutil.copy(once / "vae.safetensors", twice / "vae.safetensors")  # the same VAE under both dynamics runs
    sampler = SamplerConfig(steps=1)
    train_dynamics(dit_cfg, dyn_train, sampler, carracing_data, once, cpu)
    (twice / "stopped").unlink()
    stop_and_resume(train_dynamics, dit_cfg, dyn_train, sampler, carracing_data, twice, cpu)
    a, ma = _state(once / "dynamics_state.safetensors")
    b, mb = _state(twice / "dynamics_state.safetensors")
    assert {k for k in a if k.startswith("optim.")} and a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]
    assert [e["steps"] for e in json.loads(mb.pop("history"))] == [[0, 3], [3, 6]]
    ma.pop("history")
    assert ma == mb


def test_a_draft_world_trains_evaluates_and_exports_with_its_mode(tmp_path, carracing_data):
    from worldsim.engine.sampler import SamplerConfig
    from worldsim.models.dit import DiTConfig
    from worldsim.models.vae import VAEConfig
    from worldsim.training.dynamics_trainer import DynamicsTrainConfig, train_dynamics
    from worldsim.training.export import ExportConfig, export_world
    from worldsim.training.vae_trainer import VAETrainConfig, train_vae
    from worldsim.world import load_world

    cpu = torch.device("cpu")
    vae_cfg = VAEConfig(encoder_channels=(8, 16, 16), decoder_channels=(8, 16, 16), norm_groups=4, latent_channels=4)
    train_vae(vae_cfg, VAETrainConfig(steps=2, batch_size=2, warmup=1, eval_every=100, eval_clips=2, heldout_every=2),
              carracing_data, tmp_path, cpu)
    dit_cfg = DiTConfig(latent_channels=4, latent_size=16, patch_size=4, dim=32, depth=2, heads=2, window=4,
                        commit="draft")
    train_dynamics(dit_cfg, DynamicsTrainConfig(steps=3, batch_size=2, clip_length=4, warmup=1, eval_every=3,
                                                heldout_every=2), SamplerConfig(), carracing_data, tmp_path, cpu)
    assert json.loads((tmp_path / "dynamics_log.jsonl").read_text().splitlines()[-1])["rollout_psnr"] > 0
    world_file = export_world(ExportConfig(contexts=2, context_frames=4), carracing_data, tmp_path, SamplerConfig(), "d")
    assert load_world(world_file).dit.cfg.commit == "draft"
    # Step distillation needs a two-call teacher's sampler to distil, in 1..8 steps.
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    shutil.copy(tmp_path / "vae.safetensors", fresh / "vae.safetensors")
    for changes, words in (({"distill_steps": 2}, "distill_guidance"), ({"distill_steps": 9}, "1..8"),
                           ({"distill_steps": 2, "distill_guidance": 1.0, "init_from": str(world_file)},
                            "two-call teacher")):
        with pytest.raises(ValueError, match=words):
            train_dynamics(dit_cfg, DynamicsTrainConfig(steps=4, batch_size=2, clip_length=4, heldout_every=2, **changes),
                           SamplerConfig(), carracing_data, fresh, cpu)
    assert not (fresh / "dynamics.safetensors").exists()
    # A one-call fine-tune anchored to the one-call world it starts from: both losses logged.
    train_dynamics(dit_cfg, DynamicsTrainConfig(steps=2, batch_size=2, clip_length=4, warmup=1, eval_every=2,
                                                heldout_every=2, log_every=1, anchor_weight=1.0,
                                                init_from=str(world_file)), SamplerConfig(), carracing_data, fresh, cpu)
    rows = [json.loads(r) for r in (fresh / "dynamics_log.jsonl").read_text().splitlines() if '"anchor"' in r]
    assert [r["step"] for r in rows if r["anchor"] > 0 and r["flow"] > 0] == [1, 2]
