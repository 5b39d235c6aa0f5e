import numpy as np
import pytest
import torch

from worldsim.engine.simulator import SamplerConfig, Simulator
from worldsim.models.dit import DiT, DiTConfig
from worldsim.models.vae import CausalVAE, VAEConfig

VAE = VAEConfig(encoder_channels=(8, 16, 16), decoder_channels=(8, 16, 16), norm_groups=4, latent_channels=4)
DIT = DiTConfig(latent_channels=4, latent_size=16, patch_size=4, dim=32, depth=2, heads=2, window=3)


def make(batch=2, **sampler) -> Simulator:
    torch.manual_seed(0)
    vae, dit = CausalVAE(VAE), DiT(DIT, {"type": "Discrete", "n": 5, "start": 0})
    with torch.no_grad():
        for p in dit.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return Simulator(dit, vae, batch, SamplerConfig(**sampler), seed=1)


def context(batch=2, t=3):
    return np.random.default_rng(0).integers(0, 256, (batch, t, 64, 64, 3), dtype=np.uint8)


def rollout(sim, actions):
    sim.seed(7)
    sim.prefill(context(sim.batch))
    return [sim.step(torch.tensor(a)) for a in actions]


@pytest.mark.parametrize("guidance, start_level", [(1.0, 1.0), (2.0, 1.0), (1.0, 0.5)])
def test_rollouts_are_reproducible_and_follow_actions(guidance, start_level):
    sim = make(guidance=guidance, start_level=start_level)
    acts = [[1, 2]] * 8  # more than the window: the cache slides
    a, b = rollout(sim, acts), rollout(sim, acts)
    for (fa, ra, da), (fb, rb, db) in zip(a, b, strict=True):
        assert fa.shape == (2, 64, 64, 3) and fa.dtype == np.uint8
        np.testing.assert_array_equal(fa, fb)
        assert torch.equal(ra, rb) and torch.equal(da, db) and ((da >= 0) & (da <= 1)).all()
    other = rollout(sim, [[3, 4]] * 8)
    assert not np.array_equal(a[-1][0], other[-1][0])


def test_worlds_in_a_batch_are_independent():
    sim = make()
    both = rollout(sim, [[1, 1]] * 3)[-1][0]
    changed = rollout(sim, [[1, 4]] * 3)[-1][0]
    assert not np.array_equal(both[1], changed[1])


def test_misuse_gets_clear_errors():
    sim = make()
    with pytest.raises(RuntimeError, match="prefill"):
        sim.step(torch.tensor([0, 0]))
    with pytest.raises(ValueError, match="3 worlds, this simulator runs 2"):
        sim.prefill(context(batch=3))
    with pytest.raises(ValueError, match="uint8 \\(B, T, H, W, 3\\)"):
        sim.prefill(context()[0])


@pytest.mark.parametrize("start_level", [1.0, 0.3])
def test_restarting_some_worlds_leaves_the_others_untouched(start_level):
    """prefill(worlds=...) restarts those worlds exactly as a full prefill would, and nothing else
    (also when sampling starts from the previous frame's latent)."""
    ctx_a, ctx_b = context(2, 3), context(2, 3)[:, ::-1].copy()
    acts = [torch.tensor([1, 3])] * 4

    def run(restart):
        sim = make(context_level=0.0, start_level=start_level)  # context frames enter the cache clean
        sim.prefill(ctx_a)
        for a in acts:
            sim.step(a)
        restart(sim)
        sim.seed(5)
        return [sim.step(a)[0] for a in acts]

    untouched = run(lambda sim: None)
    partial = run(lambda sim: sim.prefill(ctx_b[1:], worlds=[1]))
    full = run(lambda sim: sim.prefill(ctx_b))
    mask = run(lambda sim: sim.prefill(ctx_b[1:], worlds=np.array([False, True])))
    for u, p, f, m in zip(untouched, partial, full, mask, strict=True):
        np.testing.assert_array_equal(p[0], u[0])  # world 0 goes on as if nothing happened
        assert np.abs(p[1].astype(int) - f[1].astype(int)).max() <= 1  # world 1 restarted like a full prefill
        np.testing.assert_array_equal(m, p)
    assert not np.array_equal(partial[-1][1], untouched[-1][1])


def test_partial_restart_needs_a_started_simulator():
    sim = make()
    with pytest.raises(RuntimeError, match="first prefill starts all worlds"):
        sim.prefill(context(1), worlds=[0])
    sim.prefill(context())
    with pytest.raises(ValueError, match="2 worlds are to be started"):
        sim.prefill(context(1), worlds=[0, 1])
    with pytest.raises(ValueError, match="distinct and in 0..1"):
        sim.prefill(context(1), worlds=[2])


def test_compiled_step_gives_the_eager_frames():
    eager = make()
    compiled = Simulator(eager.dit, eager.vae, 2, eager.sampler, seed=1, compile=True)
    acts = [torch.tensor([1, 3])] * 5  # past the window of 3: the ring buffer wraps
    for sim in (eager, compiled):
        sim.seed(7)
        sim.prefill(context())
    for a in acts:
        fe, re, de = eager.step(a)
        fc, rc, dc = compiled.step(a)
        assert np.abs(fe.astype(int) - fc.astype(int)).max() <= 1
        torch.testing.assert_close(rc, re, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(dc, de, atol=1e-4, rtol=1e-4)
