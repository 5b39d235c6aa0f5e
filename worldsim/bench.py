"""The core's benchmarks: the engine, the VAE, one world's step, training and file checks, as functions
that return figures (never asserted in tests). ``python -m envs.bench`` runs them with the env parts and
prints the table.

Sections (``--only a,b``): ``decode`` (streaming VAE decode of one frame, encode of one),
``interactive`` (one world: model step + streaming decode, p50/p99 ms and fps, for the
default world and a larger config), ``engine`` (KV cache vs recomputing the window at
W = 16; frame 50 vs frame N of one rollout, with memory at both), ``vector`` (the
vector env's world-steps/s at N = 1, 16, 256, 1024, and a SyncVectorEnv of 16 single
envs), ``train`` (dynamics training frames/s; on CUDA also model FLOP utilisation
against the measured bf16 matmul rate). Weights are random unless ``--world`` is
given: speed does not depend on them.
"""

from __future__ import annotations

import copy
import resource
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from worldsim.engine.kv_cache import KVCache
from worldsim.models.causal_conv import StreamCache
from worldsim.models.dit import DiT, DiTConfig
from worldsim.models.vae import CausalVAE, VAEConfig
from worldsim.world import load_world


def _percentiles(times: list[float]) -> dict[str, float]:
    t = sorted(times)
    return {"p50_ms": 1e3 * t[len(t) // 2], "p99_ms": 1e3 * t[min(len(t) - 1, int(0.99 * len(t)))]}


@torch.inference_mode()
def bench_vae(vae: CausalVAE, iters: int = 200, warmup: int = 20) -> dict[str, float]:
    cfg = vae.cfg
    z = torch.randn(1, 1, cfg.latent_channels, cfg.latent_size, cfg.latent_size)
    cache = StreamCache()
    for _ in range(warmup):
        vae.decode(z, cache)
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        vae.decode(z, cache)
        times.append(time.perf_counter() - t)
    x = torch.zeros(1, 1, 3, cfg.image_size, cfg.image_size)
    enc = []
    for i in range(max(1, iters // 4) + warmup):
        t = time.perf_counter()
        vae.encode(x)
        if i >= warmup:
            enc.append(time.perf_counter() - t)
    out = {f"stream_decode_{k}": v for k, v in _percentiles(times).items()}
    out.update({f"encode_frame_{k}": v for k, v in _percentiles(enc).items()})
    return out


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


@torch.inference_mode()
def bench_engine(cfg: DiTConfig, steps: int = 2, long: int = 5000, iters: int = 30) -> dict[str, float]:
    """One world, random weights (speed does not depend on them). A frame = ``steps`` denoising calls + 1 commit."""
    if long <= 50:
        raise ValueError(f"the rollout must pass frame 50 to compare with it; got --frames {long}")
    torch.manual_seed(0)
    dit = DiT(cfg, {"type": "Discrete", "n": 5, "start": 0}).eval()
    c, w = cfg, cfg.window
    cache = KVCache(c.depth, 1, c.heads, c.head_dim, w, c.tokens_per_frame)
    z = torch.randn(1, 1, c.latent_channels, c.latent_size, c.latent_size)
    a, lv = torch.zeros(1, 1, dtype=torch.long), torch.full((1, 1), 0.5)

    def frame(t: int, kv: KVCache) -> float:
        tt = torch.tensor([t])
        start = time.perf_counter()
        for _ in range(steps):
            dit.step(z, lv, a, tt, kv)
        dit.step(z, lv, a, tt, kv, commit=True)
        return time.perf_counter() - start

    # One rollout to frame `long`, keeping a copy of its cache at frame 50. The two
    # states are then timed interleaved, so a machine that drifts in speed over the
    # minutes of the rollout does not bias the ratio.
    for t in range(long):
        if t == 50:
            early_cache, rss_early = copy.deepcopy(cache), _rss_mib()
        frame(t, cache)
    rss_late = _rss_mib()
    early, late = [], []
    for i in range(iters):
        early.append(frame(50 + i, early_cache))
        late.append(frame(long + i, cache))
    t = long + iters
    # Recompute: every call runs the whole window of W frames (no cache).
    zw, lw, aw = z.expand(1, w, -1, -1, -1), lv.expand(1, w), a.expand(1, w)
    recompute = []
    for _ in range(max(3, iters // 5)):
        start = time.perf_counter()
        for _ in range(steps + 1):
            dit(zw, lw, aw, start=t)
        recompute.append(time.perf_counter() - start)
    e, l_, r = (sorted(x)[len(x) // 2] for x in (early, late, recompute))
    return {
        "dit_params_M": sum(p.numel() for p in dit.parameters()) / 1e6,
        "frame_ms_at_50": 1e3 * e, f"frame_ms_at_{long}": 1e3 * l_, "late_over_early": l_ / e,
        "rss_mib_at_50": rss_early, f"rss_mib_at_{long}": rss_late,
        "recompute_window_frame_ms": 1e3 * r, "recompute_over_cached": r / e,
    }


LARGE = {"dim": 384, "depth": 12, "heads": 6}
"""The 'larger config' of the interactive benchmark: about 4x the default DiT's parameters."""


def peak_rss_mib() -> float:
    """The peak resident memory of this process so far, MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def random_world(path: Path, dit_cfg: DiTConfig, vae_cfg: VAEConfig | None = None) -> Path:
    """A world file with random weights and random start contexts (for timing only)."""
    from worldsim.engine.sampler import SamplerConfig
    from worldsim.world import save_world

    torch.manual_seed(0)
    vae = CausalVAE(vae_cfg or VAEConfig())
    dit = DiT(dit_cfg, {"type": "Discrete", "n": 5, "start": 0})
    rng = np.random.default_rng(0)
    s = vae.cfg.image_size
    source = {"world": "bench", "env_id": "bench", "fps": 50.0, "frame_size": s, "action_space": dit.action_space,
              "max_episode_steps": 10**9, "keymap": {"name": "bench", "bindings": [], "default": 0}}
    # Two sampling steps, as the random world's figures in BENCHMARKS.md were measured (the shipped worlds take one);
    # a commit=draft world makes each frame in its one call, one step.
    steps = 1 if dit_cfg.commit == "draft" else 2
    return save_world(path, vae, dit, source=source, sampler=SamplerConfig(steps=steps, context_level=0.1, start_level=1.0), latent_mean=torch.zeros(vae.cfg.latent_channels),
                      latent_std=torch.ones(vae.cfg.latent_channels), context_frames=rng.integers(0, 256, (2, 4, s, s, 3), dtype=np.uint8),
                      context_actions=np.zeros((2, 4), np.int64), weights_dtype=None)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_times(step, device: torch.device, warmup: int, iters: int, after=None) -> dict[str, float]:
    """p50/p99 ms of ``step()`` over ``iters`` calls after ``warmup`` untimed ones; ``after(result)``, untimed,
    follows each call."""
    times = []
    for i in range(warmup + iters):
        _sync(device)
        t = time.perf_counter()
        out = step()
        if i >= warmup:
            times.append(time.perf_counter() - t)
        if after is not None:
            after(out)
    return _percentiles(times)


def bench_interactive(world_path: Path, device: torch.device, steps: int | None, iters: int, warmup: int = 10,
                      compile: bool = False, guidance: float | None = None, window: int | None = None,
                      dtype: torch.dtype = torch.float32) -> dict[str, float]:
    """One world, as play.py runs it: a step = sampling + cache commit + streaming decode + copy to the host.
    ``window``: None = the world's stored sampler window; ``dtype``: the DiT's (play.py: dtype auto)."""
    world = load_world(world_path, device, dtype)
    sampler = world.sampler.override(steps=steps, guidance=guidance, window=window)
    sim = world.simulator(1, sampler, compile=compile)
    sim.prefill(world.context_frames[:1], world.context_actions[:1])
    a = torch.zeros(1, dtype=torch.long, device=device)
    p = step_times(lambda: sim.step(a), device, warmup, iters)  # uint8 numpy frames: includes the device -> host copy
    return {**p, "fps": 1e3 / p["p50_ms"], "sampling_steps": sampler.steps, "guidance": sampler.guidance, "compiled": compile,
            "window": sim.window, "dtype": str(dtype).removeprefix("torch."),
            "dit_params_M": sum(x.numel() for x in world.dit.parameters()) / 1e6}


def matmul_tflops(device: torch.device, n: int = 8192, iters: int = 20) -> float:
    """Measured bf16 matmul rate (the denominator of model FLOP utilisation)."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    _sync(device)
    t = time.perf_counter()
    for _ in range(iters):
        a @ b
    _sync(device)
    return 2 * n**3 * iters / (time.perf_counter() - t) / 1e12


def train_flops_per_frame(cfg: DiTConfig) -> float:
    """Forward + backward FLOPs per frame of a training clip: 6 x (weight multiply-adds per token) x tokens,
    plus attention (QK^T and AV over at most a window of frames, forward and backward)."""
    d, h = cfg.dim, int(cfg.dim * cfg.mlp_ratio)
    per_token = cfg.depth * (4 * d * d + 2 * d * h) + 2 * d * cfg.latent_channels * cfg.patch_size**2
    tokens = cfg.tokens_per_frame
    attn = cfg.depth * 2 * 2 * tokens * (cfg.window * tokens) * d  # fwd: QK^T and AV
    return 6 * per_token * tokens + 3 * attn


def bench_train(dit_cfg: DiTConfig, vae_cfg: VAEConfig, device: torch.device, iters: int, batch: int = 8, clip: int = 16,
                precision: str = "auto") -> dict[str, float]:
    """Dynamics training throughput on random frames (VAE encode + DiT forward/backward + AdamW + EMA), and
    on pre-encoded latents (no encoder) in fp32 and under bf16 autocast."""
    from worldsim.engine.latent_space import LatentEncoder
    from worldsim.training.dynamics_trainer import DynamicsTrainConfig, clip_loss
    from worldsim.training.ema import EMA
    from worldsim.training.loop import autocast_dtype

    torch.manual_seed(0)
    cfg = DynamicsTrainConfig(batch_size=batch, clip_length=clip, precision=precision)
    vae = CausalVAE(vae_cfg)
    encode = LatentEncoder(vae, {}, device)
    dit = DiT(dit_cfg, {"type": "Discrete", "n": 5, "start": 0}).to(device)
    ema = EMA(dit).to(device)
    opt = torch.optim.AdamW(dit.parameters(), lr=1e-4)
    amp = autocast_dtype(device, precision)
    gen = torch.Generator().manual_seed(0)
    s = vae_cfg.image_size
    data = {"frames": torch.randint(0, 256, (batch, clip, s, s, 3), dtype=torch.uint8),
            "actions": torch.randint(0, 5, (batch, clip)), "rewards": torch.randn(batch, clip),
            "terminated": torch.zeros(batch, clip, dtype=torch.bool), "start": torch.ones(batch, dtype=torch.long)}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def step(batch_data, amp):
        loss, _ = clip_loss(dit, encode, batch_data, cfg, gen, device, amp)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ema.update(dit)

    def seconds(batch_data, amp) -> float:
        for _ in range(2):
            step(batch_data, amp)
        _sync(device)
        t = time.perf_counter()
        for _ in range(iters):
            step(batch_data, amp)
        _sync(device)
        return (time.perf_counter() - t) / iters

    secs = seconds(data, amp)
    # Pre-encoded latents (dynamics.train.pre_encode): the same step without the encoder, fp32 and bf16 autocast.
    latent = {k: v for k, v in data.items() if k != "frames"}
    latent["latents"] = encode(data["frames"])
    pre = {name: seconds(latent, dtype) for name, dtype in (("fp32", None), ("bf16", torch.bfloat16))}
    out = {"train_frames_per_s": batch * clip / secs, "train_step_ms": 1e3 * secs,
           "train_pre_encoded_fp32_frames_per_s": batch * clip / pre["fp32"],
           "train_pre_encoded_bf16_frames_per_s": batch * clip / pre["bf16"], "peak_rss_mib": peak_rss_mib(),
           "batch": batch, "clip_length": clip}
    if device.type == "cuda":
        achieved = train_flops_per_frame(dit_cfg) * batch * clip / secs / 1e12
        peak = matmul_tflops(device)
        out.update(cuda_peak_mib=torch.cuda.max_memory_allocated(device) / 2**20, achieved_tflops=achieved,
                   bf16_matmul_tflops=peak, mfu=achieved / peak)
    return out


def bench_load(world_path: Path, folder: Path, shard_mib: int = 256, iters: int = 5) -> dict[str, float]:
    """What checking files costs: a world file's load with its checksum verification, the verification alone,
    and the verification rate of an episode shard (page cache warm: the checksum, not the disk, is timed)."""
    from worldsim.data.episodes import Episode, write_shard
    from worldsim.integrity import damaged_tensors

    load_world(world_path)  # warm caches and imports
    load = [_timed(lambda: load_world(world_path)) for _ in range(iters)]
    check = [_timed(lambda: damaged_tensors(world_path)) for _ in range(iters * 4)]
    t = max(1, shard_mib * 2**20 // (64 * 64 * 3))
    frames = np.random.default_rng(0).integers(0, 256, (t, 64, 64, 3), dtype=np.uint8)
    shard = write_shard(folder / "bench-shard.safetensors", [Episode(
        frames, np.zeros(t, np.int64), np.zeros(t, np.float32), np.zeros(t, bool), np.zeros(t, bool))], {"env_id": "bench"})
    verify = [_timed(lambda: damaged_tensors(shard)) for _ in range(3)]
    med = statistics.median
    return {"world_file_mib": world_path.stat().st_size / 2**20, "world_load_ms": 1e3 * med(load),
            "world_verify_ms": 1e3 * med(check), "shard_verify_gib_per_s": shard.stat().st_size / 2**30 / med(verify)}


def _timed(f) -> float:
    t = time.perf_counter()
    f()
    return time.perf_counter() - t
