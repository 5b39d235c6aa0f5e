import numpy as np
import pytest
import torch

from worldsim.engine.sampler import SamplerConfig
from worldsim.engine.simulator import Simulator
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


@pytest.mark.slow
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


def reference_rollout(sim: Simulator, ctx: np.ndarray, actions: list[list[int]], seed: int):
    """The sampler written out without a cache: every network call is a full forward pass over all frames so
    far (committed history at the context level, then the frame being sampled; each frame sees W frames by the
    DiT's windowed mask), with the same noise draws as the engine. -> per step (latent (B, 1, C, h, w), reward (B,), termination prob (B,))."""
    from worldsim.diffusion.flow import add_noise, timesteps
    from worldsim.frames import to_model

    s, dit = sim.sampler, sim.dit
    gen = torch.Generator().manual_seed(seed)
    b, t = ctx.shape[:2]
    dt = sim.dtype
    z = sim.vae.encode(to_model(ctx))  # the VAE runs in float32 whatever the DiT's dtype
    hist, hist_a, hist_null = [], [], []
    for i in range(t):
        noise = torch.randn(z[:, i:i + 1].shape, generator=gen)
        hist.append(add_noise(z[:, i:i + 1], torch.full((b, 1), s.context_level), noise).to(dt))
        hist_a.append(torch.zeros(b, 1, dtype=torch.long))
        hist_null.append(torch.ones(b, 1, dtype=torch.bool))  # no actions given: the null action
    last, out = z[:, -1:].to(dt), []
    ts = (timesteps(s.steps, s.shift) * s.start_level).to(dt)

    def predict(x, level, a, null_now):
        lo = 0  # every frame so far: the DiT's own windowed mask limits what each frame sees to W frames
        lat = torch.cat(hist[lo:] + [x], 1)
        lv = torch.cat([torch.full((b, len(hist) - lo), s.context_level, dtype=dt), level], 1)
        acts = torch.cat(hist_a[lo:] + [a], 1)
        null = torch.cat(hist_null[lo:] + [torch.full((b, 1), null_now)], 1)
        v, r, d = dit(lat, lv, acts, null, start=lo)
        return v[:, -1:], r[:, -1], d[:, -1]

    for act in actions:
        a = torch.tensor(act)[:, None]
        x = torch.randn(last.shape, generator=gen, dtype=dt)
        if s.start_level < 1:
            x = (1 - s.start_level) * last + s.start_level * x
        for k in range(s.steps):
            lv = torch.full((b, 1), float(ts[k]), dtype=dt)
            v = predict(x, lv, a, False)[0]
            if s.guidance != 1.0:
                v0 = predict(x, lv, a, True)[0]
                v = v0 + s.guidance * (v - v0)
            x = x + (ts[k + 1] - ts[k]) * v
        ctx_lv = torch.full((b, 1), s.context_level, dtype=dt)
        committed = add_noise(x, ctx_lv, torch.randn(x.shape, generator=gen, dtype=dt))
        _, r, d = predict(committed, ctx_lv, a, False)
        hist.append(committed)
        hist_a.append(a)
        hist_null.append(torch.zeros(b, 1, dtype=torch.bool))
        last = x
        out.append((x, r.float() if dit.cfg.reward_space == "raw" else torch.sign(r) * (torch.exp(r.abs()) - 1), torch.sigmoid(d)))
    return out


@pytest.mark.parametrize("sampler", [dict(steps=1, start_level=0.8, context_level=0.2),
                                     dict(steps=2, guidance=3.0, context_level=0.1),
                                     dict(steps=3, shift=2.0, start_level=0.5, context_level=0.0)])
@pytest.mark.parametrize("fold", [True, False])
def test_cached_step_equals_the_uncached_reference_sampler(sampler, fold, monkeypatch):
    """Simulator.step (KV cache, ring buffer sliding past the window, commit at the context level, guidance,
    start level) gives what full forward passes over the window give; guided both ways: the two variants in one
    call (small batches) and in two calls (large batches)."""
    import worldsim.engine.simulator as simulator

    monkeypatch.setattr(simulator, "FOLD_GUIDANCE_MAX_BATCH", 4 if fold else 0)
    sim = make(**sampler)
    assert sim.fold_guidance == fold
    ctx = context(2, 3)
    acts = [[1, 2], [3, 3], [0, 4], [2, 1], [4, 0], [1, 1]]  # 3 context + 6 frames: the window of 3 slides
    calls = []
    real_step = sim._step
    sim._step = lambda *a, **k: calls.append(1) or real_step(*a, **k)
    sim.seed(11)
    sim.prefill(ctx)
    got = []
    for a in acts:
        calls.clear()
        frames, reward, done = sim.step(torch.tensor(a))
        guided_calls = 1 if fold or sim.sampler.guidance == 1.0 else 2
        assert len(calls) == sim.sampler.steps * guided_calls + 1  # the sampling calls, and the commit pass
        got.append((sim.last.clone(), reward, done))
    with torch.no_grad():
        want = reference_rollout(sim, ctx, acts, seed=11)
    for (x, r, d), (xr, rr, dr) in zip(got, want, strict=True):
        torch.testing.assert_close(x, xr, atol=1e-5, rtol=1e-5)  # float rounding only (a wrong window: ~1e-2)
        torch.testing.assert_close(r, rr, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(d, dr, atol=1e-5, rtol=1e-5)
    # And the frames are the latents decoded: the streamed last frame equals a full decode of the sequence.
    from worldsim.frames import to_model, to_uint8

    seq = torch.cat([sim.vae.encode(to_model(ctx))] + [x for x, _, _ in want], 1)
    full = sim.vae.decode(seq)[:, -1]
    assert np.abs(to_uint8(full).astype(int) - frames.astype(int)).max() <= 1


def _draft_sim(batch=2, **sampler):
    from dataclasses import replace

    torch.manual_seed(0)
    vae, dit = CausalVAE(VAE), DiT(replace(DIT, commit="draft", draft_level=0.4), {"type": "Discrete", "n": 5, "start": 0})
    with torch.no_grad():
        for p in dit.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return Simulator(dit, vae, batch, SamplerConfig(**sampler), seed=1)


@pytest.mark.parametrize("guidance,fold", [(1.0, True), (2.5, True), (2.5, False)])
def test_a_draft_world_makes_a_frame_in_one_call_equal_to_its_uncached_reference(guidance, fold, monkeypatch):
    """commit=draft: one network call a frame (with guidance too, in a small batch: the null-action draft is a
    second variant in the same call; two calls in a large batch), and what the cache keeps is each frame's draft
    input (its previous frame noised to the draft level), as full forward passes over the drafts give."""
    import worldsim.engine.simulator as simulator
    from worldsim.frames import to_model

    monkeypatch.setattr(simulator, "FOLD_GUIDANCE_MAX_BATCH", 4 if fold else 0)
    sim = _draft_sim(guidance=guidance)
    calls = []
    real_step = sim._step
    sim._step = lambda *a, **k: calls.append(1) or real_step(*a, **k)
    ctx, acts = context(2, 3), [[1, 2], [3, 3], [0, 4], [2, 1], [4, 0]]  # the window of 3 slides
    sim.seed(5)
    sim.prefill(ctx)
    got = []
    for a in acts:
        calls.clear()
        _, reward, done = sim.step(torch.tensor(a))
        assert len(calls) == (1 if fold or guidance == 1.0 else 2)
        got.append((sim.last.clone(), reward, done))
    level, dit, b = 0.4, sim.dit, 2
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        z = sim.vae.encode(to_model(ctx))
        drafts = [(1 - level) * z[:, max(i - 1, 0):max(i - 1, 0) + 1] + level * torch.randn(z[:, :1].shape, generator=gen)
                  for i in range(3)]
        hist_a = [torch.zeros(b, 1, dtype=torch.long)] * 3
        hist_null = [torch.ones(b, 1, dtype=torch.bool)] * 3
        last = z[:, -1:]
        for (x, r, d), act in zip(got, acts, strict=True):
            draft = (1 - level) * last + level * torch.randn(last.shape, generator=gen)
            a = torch.tensor(act)[:, None]

            def predict(null_now, draft=draft, a=a):
                n = len(drafts) + 1
                v, rr, dd = dit(torch.cat(drafts + [draft], 1), torch.full((b, n), level), torch.cat(hist_a + [a], 1),
                                torch.cat(hist_null + [torch.full((b, 1), null_now)], 1))
                return v[:, -1:], rr[:, -1], dd[:, -1]

            v, rr, dd = predict(False)
            if guidance != 1.0:
                v0 = predict(True)[0]
                v = v0 + guidance * (v - v0)
            want = draft - level * v
            torch.testing.assert_close(x, want, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(r, dit.cfg.reward(rr), atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(d, torch.sigmoid(dd), atol=1e-5, rtol=1e-5)
            drafts.append(draft)
            hist_a.append(a)
            hist_null.append(torch.zeros(b, 1, dtype=torch.bool))
            last = want


def test_a_draft_world_refuses_to_sample_in_more_steps_and_says_its_mode_in_its_file(tmp_path):
    from dataclasses import replace

    from worldsim.world import load_world, save_world

    with pytest.raises(ValueError, match="one call"):
        _draft_sim(steps=2)
    sim = _draft_sim()
    path = save_world(tmp_path / "d.safetensors", sim.vae, sim.dit, source={"world": "d", "env_id": "X-v0",
                      "frame_size": 64, "action_space": sim.dit.action_space}, sampler=SamplerConfig(),
                      latent_mean=torch.zeros(4), latent_std=torch.ones(4),
                      context_frames=context(2, 3), context_actions=np.zeros((2, 3), np.int64))
    world = load_world(path)
    assert world.dit.cfg.commit == "draft" and world.dit.cfg.draft_level == 0.4
    with pytest.raises(ValueError, match="commit must be"):
        replace(DIT, commit="other").validate()
