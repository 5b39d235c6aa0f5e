"""Benchmarks that print a table of figures and write it as JSON (never asserted in tests).

    python -m worldsim.bench [--world checkpoints/carracing.safetensors] [--json bench.json] [--smoke]

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

import argparse
import copy
import json
import platform
import resource
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from .device import default_dtype
from .engine.kv_cache import KVCache
from .models.causal_conv import StreamCache
from .models.dit import DiT, DiTConfig
from .models.vae import CausalVAE, VAEConfig
from .world import load_world


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


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def random_world(path: Path, dit_cfg: DiTConfig, vae_cfg: VAEConfig | None = None) -> Path:
    """A world file with random weights and random start contexts (for timing only)."""
    from .engine.simulator import SamplerConfig
    from .world import save_world

    torch.manual_seed(0)
    vae = CausalVAE(vae_cfg or VAEConfig())
    dit = DiT(dit_cfg, {"type": "Discrete", "n": 5, "start": 0})
    rng = np.random.default_rng(0)
    s = vae.cfg.image_size
    source = {"world": "bench", "env_id": "bench", "fps": 50.0, "frame_size": s, "action_space": dit.action_space,
              "max_episode_steps": 10**9, "keymap": {"name": "bench", "bindings": [], "default": 0}}
    return save_world(path, vae, dit, source=source, sampler=SamplerConfig(), latent_mean=torch.zeros(vae.cfg.latent_channels),
                      latent_std=torch.ones(vae.cfg.latent_channels), context_frames=rng.integers(0, 256, (2, 4, s, s, 3), dtype=np.uint8),
                      context_actions=np.zeros((2, 4), np.int64), weights_dtype=None)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _step_times(step, device: torch.device, warmup: int, iters: int, after=None) -> dict[str, float]:
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
    sampler = world.sampler.override(steps=steps or None, guidance=guidance,
                                     window=None if window is None else min(window, world.dit.cfg.window))
    sim = world.simulator(1, sampler, compile=compile)
    sim.prefill(world.context_frames[:1], world.context_actions[:1])
    a = torch.zeros(1, dtype=torch.long, device=device)
    p = _step_times(lambda: sim.step(a), device, warmup, iters)  # uint8 numpy frames: includes the device -> host copy
    return {**p, "fps": 1e3 / p["p50_ms"], "sampling_steps": sampler.steps, "guidance": sampler.guidance, "compiled": compile,
            "window": sim.window, "dtype": str(dtype).removeprefix("torch."),
            "dit_params_M": sum(x.numel() for x in world.dit.parameters()) / 1e6}


def bench_gym_step(world_path: Path, device: torch.device, iters: int, warmup: int = 10) -> dict[str, float]:
    """One world through the Gymnasium API, as play.py and an agent step it (env defaults: dtype auto, the
    world's sampler): ``env.step`` = the model step + the env's bookkeeping (observation copy, reward, info)."""
    from envs.world_env import WorldModelEnv

    env = WorldModelEnv(world_path, device=str(device), max_episode_steps=10**9)
    env.reset(seed=0)
    p = _step_times(lambda: env.step(3), device, warmup, iters,
               after=lambda out: env.reset() if out[2] or out[3] else None)  # an ended episode restarts, untimed
    env.close()
    return {**p, "fps": 1e3 / p["p50_ms"]}


def bench_real_env(source: dict, steps: int = 300) -> float:
    """Steps per second of the real env behind a world, in one process, as the world's data was recorded (its
    frame size and frame skip; random actions, seeded): the rate the world is compared with."""
    from envs.source import source_world

    sw = source_world(dict(source, max_episode_steps=10**6))
    env = sw.make_env()
    try:
        env.reset(seed=0)
        env.action_space.seed(0)

        def play(n: int) -> None:
            for _ in range(n):
                if any(env.step(env.action_space.sample())[2:4]):
                    env.reset()

        play(5)
        t = time.perf_counter()
        play(steps)
        return steps / (time.perf_counter() - t)
    finally:
        env.close()


def bench_vector(world_path: Path, device: torch.device, sizes: list[int], iters: int, sync_n: int = 16) -> dict[str, float]:
    """World-steps/s of the vector env at each N, and a SyncVectorEnv of ``sync_n`` single envs for comparison."""
    import gymnasium as gym

    from . import registration

    registration.register_envs()
    out: dict[str, float] = {}

    def rate(env, n: int, k: int) -> float:
        env.reset(seed=0)
        act = np.zeros(n, dtype=np.int64)
        env.step(act)
        t = time.perf_counter()
        for _ in range(k):
            env.step(act)
        return n * k / (time.perf_counter() - t)

    # The env as it comes (dtype auto: bf16 on a CPU with native bf16; the world's stored window), with latent
    # observations (no VAE decode: what stage=agent reads), and in float32 over the whole trained window (the
    # default before both became the world's and the machine's choice).
    from .data.dataset import source_value

    world = load_world(world_path)
    trained, skip = world.dit.cfg.window, int(source_value(world.source, "frame_skip"))
    variants = {"": {}, "latents_": {"observation": "latents"},
                "float32_trained_window_": {"dtype": "float32", "window": trained}}
    for n in sizes:
        for name, kwargs in variants.items():
            env = gym.make_vec("worldsim/World-v0", num_envs=n, vectorization_mode="vector_entry_point",
                               checkpoint=str(world_path), device=str(device), max_episode_steps=10**9, **kwargs)
            out[f"{name}world_steps_per_s_N{n}"] = rate(env, n, max(2, iters // max(1, n // 16)))
            env.close()
        out[f"peak_rss_mib_after_N{n}"] = _peak_rss_mib()
        if device.type == "cuda":
            out[f"cuda_peak_mib_N{n}"] = torch.cuda.max_memory_allocated(device) / 2**20
    if sync_n:
        sync = gym.make_vec("worldsim/World-v0", num_envs=sync_n, vectorization_mode="sync", checkpoint=str(world_path),
                            device=str(device), max_episode_steps=10**9)
        out[f"sync_vector_world_steps_per_s_N{sync_n}"] = rate(sync, sync_n, max(2, iters // 4))
        sync.close()
        if f"world_steps_per_s_N{sync_n}" in out:
            out[f"native_over_sync_N{sync_n}"] = out[f"world_steps_per_s_N{sync_n}"] / out[f"sync_vector_world_steps_per_s_N{sync_n}"]
    if world.source.get("kind"):  # a world made from a real env (not the random timing world): the env's own rate
        out["real_env_steps_per_s"] = bench_real_env(world.source, max(50, 10 * iters))
    if skip > 1:  # each world step is `skip` game frames: the rates in game time
        out["frame_skip"] = skip
        for k in [k for k in out if "steps_per_s" in k]:
            out[k.replace("steps_per_s", "game_frames_per_s")] = out[k] * skip
    return out


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
    from .training.dynamics_trainer import DynamicsTrainConfig, LatentEncoder, clip_loss
    from .training.ema import EMA
    from .training.loop import autocast_dtype

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
           "train_pre_encoded_bf16_frames_per_s": batch * clip / pre["bf16"], "peak_rss_mib": _peak_rss_mib(),
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
    from .data.episodes import Episode, write_shard
    from .integrity import damaged_tensors

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


SECTIONS = ("decode", "interactive", "engine", "vector", "train", "load")


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m worldsim.bench", description=__doc__.splitlines()[0])
    p.add_argument("--world", help="a world file (default: the default world's configs with random weights)")
    p.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections of {SECTIONS}")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--iters", type=int, default=100, help="timed iterations per figure")
    p.add_argument("--frames", type=int, default=5000, help="rollout length for the late-frame timing")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the world's)")
    p.add_argument("--guidance", type=float, default=None, help="action guidance scale (default: the world's; not 1 adds a network call)")
    p.add_argument("--compile", action="store_true", help="interactive: also time the torch.compile'd step")
    p.add_argument("--sizes", default="1,16,256,1024", help="vector env sizes N")
    p.add_argument("--dit", default="", help="DiT config overrides as key=value pairs, e.g. dim=256,depth=8")
    p.add_argument("--smoke", action="store_true", help="tiny configs and a few iterations: checks the benchmark runs")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    from .device import resolve_device

    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    sections = [x for x in args.only.split(",") if x]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        p.error(f"unknown sections {sorted(unknown)}; choose from {SECTIONS}")
    kw = {k: type(getattr(DiTConfig, k))(v) for k, v in (x.split("=") for x in args.dit.split(",") if x)}
    dit_cfg, vae_cfg, large = DiTConfig(**kw), VAEConfig(), DiTConfig(**{**kw, **LARGE})
    iters, frames, sizes = args.iters, args.frames, [int(n) for n in args.sizes.split(",")]
    if args.smoke:
        vae_cfg = VAEConfig(encoder_channels=(8, 16, 16), decoder_channels=(8, 16, 16), norm_groups=4, latent_channels=4)
        dit_cfg = DiTConfig(latent_channels=4, patch_size=4, dim=32, depth=2, heads=2, window=4)
        large = replace(dit_cfg, dim=64)
        iters, frames, sizes = 3, 60, [1, 4]
    result: dict = {"machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                                "torch": torch.__version__, "device": str(device),
                                "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None},
                    "date": time.strftime("%Y-%m-%d")}
    tmp = tempfile.TemporaryDirectory()
    world_path = Path(args.world) if args.world else random_world(Path(tmp.name) / "default.safetensors", dit_cfg, vae_cfg)
    if args.world:
        w = load_world(world_path)
        dit_cfg, vae_cfg, large = w.dit.cfg, w.vae.cfg, replace(w.dit.cfg, **LARGE)
    result["world"] = str(args.world or f"random weights, DiT {dit_cfg.dim}x{dit_cfg.depth}")
    if "decode" in sections:
        vae = load_world(world_path).vae if args.world else CausalVAE(vae_cfg).eval()
        result["decode"] = bench_vae(vae, iters, warmup=5)
    if "interactive" in sections:
        # As play.py and the env run it (the world's stored sampler, dtype auto), then in float32, then in float32
        # attending to the whole trained window (the shipped world's default before its window became 8).
        played = default_dtype(device)
        result["interactive"] = bench_interactive(world_path, device, args.steps, iters, guidance=args.guidance,
                                                  dtype=played)
        result["interactive_gym_env"] = bench_gym_step(world_path, device, iters)
        if played != torch.float32:
            result["interactive_float32"] = bench_interactive(world_path, device, args.steps, iters,
                                                              guidance=args.guidance)
        if result["interactive"]["window"] != dit_cfg.window:
            result["interactive_float32_trained_window"] = bench_interactive(
                world_path, device, args.steps, iters, guidance=args.guidance, window=dit_cfg.window)
        if args.compile:
            result["interactive_compiled"] = bench_interactive(world_path, device, args.steps, iters, warmup=20, compile=True,
                                                               guidance=args.guidance, dtype=played)
        large_path = random_world(Path(tmp.name) / "large.safetensors", large, vae_cfg)
        result["interactive_large"] = {"dit": f"dim={large.dim},depth={large.depth},heads={large.heads}",
                                       **bench_interactive(large_path, device, args.steps, max(3, iters // 2), guidance=args.guidance,
                                                          dtype=played)}
    if "engine" in sections:
        result["engine"] = bench_engine(dit_cfg, long=frames, iters=max(5, iters // 5))
    if "vector" in sections:
        result["vector"] = bench_vector(world_path, device, sizes, max(2, iters // 10), sync_n=4 if args.smoke else 16)
    if "train" in sections:
        result["train"] = bench_train(dit_cfg, vae_cfg, device, max(2, iters // 20), *((2, 4) if args.smoke else (8, 16)))
    if "load" in sections:
        result["load"] = bench_load(world_path, Path(tmp.name), 16 if args.smoke else 256)
    tmp.cleanup()
    print_table(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


def print_table(result: dict) -> None:
    for section, values in result.items():
        if not isinstance(values, dict):
            print(f"{section}: {values}")
            continue
        print(f"[{section}]")
        width = max(map(len, values))
        for k, v in values.items():
            print(f"  {k:<{width}}  {v:.3f}" if isinstance(v, float) else f"  {k:<{width}}  {v}")


if __name__ == "__main__":
    main()
