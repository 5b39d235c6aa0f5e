import pytest
import torch

from worldsim.diffusion.flow import add_noise, autoregressive_schedule, sample_levels, timesteps, velocity
from worldsim.engine.kv_cache import KVCache
from worldsim.models.dit import DiT, DiTConfig

CFG = DiTConfig(latent_channels=4, latent_size=8, patch_size=2, dim=32, depth=2, heads=2, window=4, action_tokens=2)
DISCRETE = {"type": "Discrete", "n": 3, "start": 0}


def make(space=DISCRETE, cfg=CFG) -> DiT:
    torch.manual_seed(0)
    m = DiT(cfg, space).eval()
    with torch.no_grad():  # zero-initialised gates would hide bugs: perturb every weight
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return m


@pytest.mark.parametrize("shift,pool", [(0, "mean"), (5000, "mean"), (0, "attention")])
def test_cached_generation_equals_uncached_forward(shift, pool):
    from dataclasses import replace

    m, b, w = make(cfg=replace(CFG, head_pool=pool)), 2, CFG.window
    n = 3 * w + 2  # the window slides several times
    lat, acts = torch.randn(b, n, 4, 8, 8), torch.randint(0, 3, (b, n))
    cache = KVCache(CFG.depth, b, CFG.heads, CFG.head_dim, w, CFG.tokens_per_frame)
    ctx, s = 0.1, 0.7
    with torch.no_grad():
        for t in range(n):
            tt = torch.full((b,), t + shift)
            noisy = lat[:, t : t + 1] + 0.3
            v, r, d = m.step(noisy, torch.full((b, 1), s), acts[:, t : t + 1], tt, cache)
            m.step(lat[:, t : t + 1], torch.full((b, 1), ctx), acts[:, t : t + 1], tt, cache, commit=True)
            levels = torch.full((b, t + 1), ctx)
            levels[:, -1] = s
            rv, rr, rd = m(torch.cat([lat[:, :t], noisy], 1), levels, acts[:, : t + 1])
            torch.testing.assert_close(v, rv[:, -1:], rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(r, rr[:, -1:], rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(d, rd[:, -1:], rtol=1e-4, atol=1e-5)


def test_a_bfloat16_cache_gives_the_uncached_forward_within_its_precision():
    # Worlds at different frame indices write different slots; a wrong slot or mask would be far off.
    m, b, w = make(), 3, CFG.window
    n = 2 * w + 1
    lat, acts = torch.randn(b, n, 4, 8, 8), torch.randint(0, 3, (b, n))
    cache = KVCache(CFG.depth, b, CFG.heads, CFG.head_dim, w, CFG.tokens_per_frame, dtype=torch.bfloat16)
    assert cache.attention_mask(torch.zeros(b, dtype=torch.long)).dtype == torch.bfloat16
    offset = torch.tensor([0, 1, 3])
    with torch.no_grad():
        for t in range(n):
            tt = offset + t
            before = cache.k.clone()
            m.step(lat[:, t : t + 1], torch.full((b, 1), 0.1), acts[:, t : t + 1], tt, cache, commit=True)
            changed = (cache.k != before).any(dim=(0, 2, 4)).view(b, w + 1, -1).any(-1)  # (B, slots)
            for i in range(b):  # of the W slots only each world's own slot t % W moved (the last is scratch)
                assert changed[i, :w].nonzero().flatten().tolist() == [int(tt[i]) % w]
        noisy = lat[:, -1:] + 0.3
        v, r, _ = m.step(noisy, torch.full((b, 1), 0.7), acts[:, -1:], offset + n, cache)
        levels = torch.full((b, n + 1), 0.1)
        levels[:, -1] = 0.7
        rv, rr, _ = m(torch.cat([lat, noisy], 1), levels, torch.cat([acts, acts[:, -1:]], 1))
    torch.testing.assert_close(v, rv[:, -1:], rtol=0.05, atol=0.03)
    torch.testing.assert_close(r, rr[:, -1:], rtol=0.05, atol=0.03)


def test_attention_is_causal_and_windowed():
    m, t = make(), 10
    lat, acts, lv = torch.randn(1, t, 4, 8, 8), torch.randint(0, 3, (1, t)), torch.rand(1, t)
    with torch.no_grad():
        v, r, d = m(lat, lv, acts)
        lat2, acts2 = lat.clone(), acts.clone()
        lat2[:, 6] += 1.0
        acts2[:, 6] = (acts2[:, 6] + 1) % 3
        v2, r2, _ = m(lat2, lv, acts2)
    assert torch.equal(v[:, :6], v2[:, :6]) and torch.equal(r[:, :6], r2[:, :6])  # the past is untouched
    assert not torch.allclose(v[:, 6:], v2[:, 6:])
    # With depth 2 and window 4, frame 6 reaches at most frames 6 .. 6 + 2 * 3.
    mask = m.frame_mask(torch.arange(t))
    per = CFG.tokens_per_frame
    assert mask[5 * per, 2 * per] and not mask[5 * per, 1 * per] and not mask[5 * per, 6 * per]


def test_branch_frames_predict_what_the_clip_up_to_them_predicts():
    """Branches (guidance distillation): each branch frame gets exactly the output it would get as the last
    frame of the clip cut just before its index, and the clip's own frames do not see the branches."""
    m, t = make(), 7  # longer than the window, so the window limits the branches too
    lat, acts, lv = torch.randn(2, t, 4, 8, 8), torch.randint(0, 3, (2, t)), torch.rand(2, t) * 0.2
    idx = [1, 3, 6, 6]  # two variants of frame 6 (other level and action)
    blat, bacts, blv = torch.randn(2, 4, 4, 8, 8), torch.randint(0, 3, (2, 4)), torch.rand(2, 4)
    frames = torch.tensor(list(range(t)) + idx)
    branch = torch.arange(t + 4) >= t
    with torch.no_grad():
        v, r, d = m(torch.cat([lat, blat], 1), torch.cat([lv, blv], 1), torch.cat([acts, bacts], 1),
                    frames=frames, branch=branch)
        v0, r0, _ = m(lat, lv, acts)
        torch.testing.assert_close(v[:, :t], v0, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(r[:, :t], r0, rtol=1e-4, atol=1e-5)
        for j, i in enumerate(idx):
            rv, rr, _ = m(torch.cat([lat[:, :i], blat[:, j : j + 1]], 1), torch.cat([lv[:, :i], blv[:, j : j + 1]], 1),
                          torch.cat([acts[:, :i], bacts[:, j : j + 1]], 1))
            torch.testing.assert_close(v[:, t + j], rv[:, -1], rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(r[:, t + j], rr[:, -1], rtol=1e-4, atol=1e-5)


def test_actions_change_the_prediction_and_null_differs():
    m = make()
    lat, lv = torch.randn(1, 3, 4, 8, 8), torch.rand(1, 3)
    with torch.no_grad():
        outs = [m(lat, lv, torch.tensor([[0, 1, a]]))[0][:, -1] for a in range(3)]
        null = m(lat, lv, torch.tensor([[0, 1, 0]]), null=torch.tensor([[False, False, True]]))[0][:, -1]
    assert not torch.allclose(outs[0], outs[1]) and not torch.allclose(outs[1], outs[2])
    assert not torch.allclose(null, outs[0])


@pytest.mark.parametrize("space,actions", [
    ({"type": "MultiDiscrete", "nvec": [3, 2]}, torch.tensor([[[0, 1], [2, 0]]])),
    ({"type": "Box", "low": [-1.0, -1.0], "high": [1.0, 1.0], "shape": [2]}, torch.tensor([[[0.5, -0.2], [0.1, 0.9]]])),
])
def test_other_action_spaces(space, actions):
    m = make(space)
    x, lv = torch.randn(1, 2, 4, 8, 8), torch.rand(1, 2)
    v, r, d = m(x, lv, actions, null=torch.tensor([[True, False]]))
    assert v.shape == (1, 2, 4, 8, 8) and r.shape == d.shape == (1, 2)
    # The action has an effect: another action for frame 1 changes its prediction; frame 0 (null) and the
    # earlier frame (causal) are untouched.
    other = actions.clone()
    other[0, 1] = torch.tensor([1, 1]) if space["type"] == "MultiDiscrete" else torch.tensor([-0.9, 0.3])
    v2, _, _ = m(x, lv, other, null=torch.tensor([[True, False]]))
    assert not torch.allclose(v2[:, 1], v[:, 1]) and torch.allclose(v2[:, 0], v[:, 0])
    other[0, 0] = other[0, 1]  # frame 0 takes the null action whatever is given
    v3, _, _ = m(x, lv, other, null=torch.tensor([[True, False]]))
    torch.testing.assert_close(v3, v2)


def test_zero_initialised_network_predicts_zero_velocity():
    torch.manual_seed(0)
    m = DiT(CFG, DISCRETE)
    v, _, _ = m(torch.randn(2, 3, 4, 8, 8), torch.rand(2, 3), torch.randint(0, 3, (2, 3)))
    assert torch.count_nonzero(v) == 0


def test_noise_schedule_matrix():
    frames, steps, ctx = 4, 3, 0.05
    m = autoregressive_schedule(frames, steps, ctx)
    assert m.shape == (frames * steps + 1, frames)
    assert ((m >= 0) & (m <= 1)).all()
    assert (m[1:] <= m[:-1] + 1e-7).all()  # no frame ever gets noisier
    for r in range(frames * steps):
        f = r // steps  # the frame being generated at row r
        assert (m[r, :f] == ctx).all() and (m[r, f + 1 :] == 1).all() and 0 < m[r, f] <= 1
    assert (m[-1] == ctx).all()
    assert torch.equal(m[:steps, 0], timesteps(steps)[:-1])
    assert timesteps(4, shift=3.0)[1] > timesteps(4)[1]  # shift spends steps at high noise
    with pytest.raises(ValueError, match="between 1 and 64"):
        timesteps(0)


def test_flow_matching_identities():
    x0, eps = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    lv = sample_levels(2, 3, generator=torch.Generator().manual_seed(0))
    assert ((lv > 0) & (lv < 1)).all()
    xs = add_noise(x0, lv, eps)
    # One exact Euler step from level s to 0 with the true velocity recovers the data.
    torch.testing.assert_close(xs - lv[..., None] * velocity(x0, eps), x0)


def test_fine_tuning_from_a_model_without_action_conditioning(tmp_path):
    """init_from: an older model (no action adaLN path) loads into the new one, which starts out predicting
    exactly what the old one did (the new path is zero-initialised); unrelated files are refused."""
    from dataclasses import replace

    from worldsim.training.dynamics_trainer import init_weights, save_dynamics

    old = make(cfg=replace(CFG, action_cond=False))
    path = tmp_path / "old.safetensors"
    save_dynamics(path, old, {"step": 1})
    torch.manual_seed(1)
    new = DiT(CFG, DISCRETE).eval()
    assert init_weights(new, path) == ["action_cond.bias", "action_cond.weight"]
    lat, lv, acts = torch.randn(2, 3, 4, 8, 8), torch.rand(2, 3), torch.randint(0, 3, (2, 3))
    with torch.no_grad():
        torch.testing.assert_close(new(lat, lv, acts)[0], old(lat, lv, acts)[0])
    other = DiT(CFG, {"type": "Discrete", "n": 4, "start": 0})
    with pytest.raises(ValueError, match="action space"):
        init_weights(other, path)


def test_attention_head_pool_starts_as_the_mean_and_can_read_one_token(tmp_path):
    """head_pool=attention: a world with mean-pooled heads loads into it and predicts exactly the same rewards
    and terminations (the queries start at zero); a query can single out one token of a frame, which the mean
    dilutes 1 : L."""
    from dataclasses import replace

    from worldsim.models.dit import AttentionPool
    from worldsim.training.dynamics_trainer import init_weights, save_dynamics

    old = make()
    path = tmp_path / "old.safetensors"
    save_dynamics(path, old, {"step": 1})
    new = DiT(replace(CFG, head_pool="attention"), DISCRETE).eval()
    assert init_weights(new, path) == ["done_pool.query", "reward_pool.query"]
    lat, lv, acts = torch.randn(2, 3, 4, 8, 8), torch.rand(2, 3), torch.randint(0, 3, (2, 3))
    with torch.no_grad():
        for a, b in zip(new(lat, lv, acts), old(lat, lv, acts), strict=True):
            torch.testing.assert_close(a, b)
    pool = AttentionPool(8, 2)
    # Four background tokens, flat across channels (their normalised keys are zero), and the one token that differs.
    x = torch.arange(1.0, 6.0)[:, None].repeat(1, 8) * 0.1
    x[3] = torch.tensor([3.0, -3, 3, -3, -3, 3, -3, 3])
    with torch.no_grad():
        pool.query.copy_(torch.nn.functional.layer_norm(x[3], (8,)).view(2, 4) * 20)
    assert (pool(x) - x[3]).abs().max() < 0.05 < (x.mean(0) - x[3]).abs().max()
    with pytest.raises(ValueError, match="head_pool"):
        DiT(replace(CFG, head_pool="max"), DISCRETE)


@pytest.mark.parametrize("variants", [2, 3])
def test_variants_of_a_frame_in_one_call_equal_one_call_each(variants):
    """A call of V variants of frame t (guidance: with and without the action) gives what V calls give: each
    variant sees the cached past and itself, never another; with commit the cache keeps the first variant."""
    m, b, w = make(), 2, CFG.window
    lat, acts = torch.randn(b, w + 3, 4, 8, 8), torch.randint(0, 3, (b, w + 3))
    one = KVCache(CFG.depth, b, CFG.heads, CFG.head_dim, w, CFG.tokens_per_frame)
    many = KVCache(CFG.depth, b, CFG.heads, CFG.head_dim, w, CFG.tokens_per_frame, variants=variants)
    with torch.no_grad():
        for t in range(w + 2):  # the window slides past its first slots
            tt = torch.full((b,), t)
            for cache in (one, many):
                m.step(lat[:, t : t + 1], torch.full((b, 1), 0.1), acts[:, t : t + 1], tt, cache, commit=True)
        t = w + 2
        tt = torch.full((b,), t)
        x = lat[:, t : t + 1] + 0.3 * torch.randn(b, variants, 4, 8, 8)  # variants differ in latent, level,
        levels = torch.rand(b, variants)  # action and null
        a = torch.randint(0, 3, (b, variants))
        null = torch.rand(b, variants) < 0.5
        v, r, d = m.step(x, levels, a, tt, many, commit=True, null=null)
        assert v.shape == (b, variants, 4, 8, 8) and r.shape == d.shape == (b, variants)
        for i in range(variants):
            vi, ri, di = m.step(x[:, i : i + 1], levels[:, i : i + 1], a[:, i : i + 1], tt, one, commit=i == 0,
                                null=null[:, i : i + 1])
            torch.testing.assert_close(v[:, i : i + 1], vi, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(r[:, i : i + 1], ri, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(d[:, i : i + 1], di, rtol=1e-4, atol=1e-5)
        past = w * CFG.tokens_per_frame  # the W slots; what lies beyond them is scratch
        torch.testing.assert_close(many.k[:, :, :, :past], one.k[:, :, :, :past])
        torch.testing.assert_close(many.v[:, :, :, :past], one.v[:, :, :, :past])
        with pytest.raises(ValueError, match="variants="):
            m.step(x, levels, a, tt, one, null=null)  # a cache of one scratch slot cannot run V variants
