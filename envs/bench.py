"""Benchmarks that print a table of figures and write it as JSON (never asserted in tests).

    python -m envs.bench [--world checkpoints/carracing.safetensors] [--json bench.json] [--smoke]

Sections (``--only a,b``): ``decode`` (streaming VAE decode of one frame, encode of one),
``interactive`` (one world: model step + streaming decode, p50/p99 ms and fps, for the
default world and a larger config; and through the Gymnasium env), ``engine`` (KV cache vs
recomputing the window at W = 16; frame 50 vs frame N of one rollout, with memory at both),
``vector`` (the vector env's world-steps/s at N = 1, 16, 256, 1024: as it comes, with latent
observations, at stage=agent's window, in float32; and a SyncVectorEnv of 16 single envs),
``train`` (dynamics training frames/s; on CUDA also model FLOP utilisation against
the measured bf16 matmul rate), ``load`` (what checking files costs). Weights are random unless
``--world`` is given: speed does not depend on them. The core's parts are in :mod:`worldsim.bench`;
the parts that step Gymnasium envs are here.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from envs.agent.training import AgentTrainConfig
from worldsim.bench import (
    LARGE,
    bench_engine,
    bench_interactive,
    bench_load,
    bench_train,
    bench_vae,
    peak_rss_mib,
    random_world,
    step_times,
)
from worldsim.data.dataset import source_value
from worldsim.device import default_dtype
from worldsim.models.dit import DiTConfig
from worldsim.models.vae import CausalVAE, VAEConfig
from worldsim.world import load_world


def bench_gym_step(world_path: Path, device: torch.device, iters: int, warmup: int = 10) -> dict[str, float]:
    """One world through the Gymnasium API, as play.py and an agent step it (env defaults: dtype auto, the
    world's sampler): ``env.step`` = the model step + the env's bookkeeping (observation copy, reward, info)."""
    from envs.worldenv.env import WorldModelEnv

    env = WorldModelEnv(world_path, device=str(device), max_episode_steps=10**9)
    env.reset(seed=0)
    p = step_times(lambda: env.step(3), device, warmup, iters,
               after=lambda out: env.reset() if out[2] or out[3] else None)  # an ended episode restarts, untimed
    env.close()
    return {**p, "fps": 1e3 / p["p50_ms"]}


def bench_real_env(source: dict, steps: int = 300) -> float:
    """Steps per second of the real env behind a world, in one process, as the world's data was recorded (its
    frame size and frame skip; random actions, seeded): the rate the world is compared with."""
    from envs.games.source import source_game

    sw = source_game(dict(source, max_episode_steps=10**6))
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


def bench_vector(world_path: Path, device: torch.device, sizes: list[int], iters: int, sync_n: int = 16,
                 compile: bool = False) -> dict[str, float]:
    """World-steps/s of the vector env at each N, and a SyncVectorEnv of ``sync_n`` single envs for comparison;
    ``compile``: also with latent observations through ``torch.compile`` (warmed up past its compilation)."""
    import gymnasium as gym

    import envs  # noqa: F401  (registers the ids)
    out: dict[str, float] = {}

    def rate(env, n: int, k: int, warm: int = 1) -> float:
        env.reset(seed=0)
        act = np.zeros(n, dtype=np.int64)
        for _ in range(warm):
            env.step(act)
        t = time.perf_counter()
        for _ in range(k):
            env.step(act)
        return n * k / (time.perf_counter() - t)

    # The env as it comes (dtype auto: bf16 on a CPU with native bf16; the world's stored window), with latent
    # observations (no VAE decode: what stage=agent reads), and in float32 over the whole trained window (the
    # default before both became the world's and the machine's choice).
    world = load_world(world_path)
    trained, skip = world.dit.cfg.window, int(source_value(world.source, "frame_skip"))
    variants = {"": {}, "latents_": {"observation": "latents"},
                "float32_trained_window_": {"dtype": "float32", "window": trained}}
    # What stage=agent steps: latent observations at the agent's window (8 by default; fidelity as at 16).
    agent_window = AgentTrainConfig.window
    if agent_window is not None and agent_window < trained:
        variants["agent_window_latents_"] = {"observation": "latents", "window": agent_window}
    if compile:
        variants["compiled_latents_"] = {"observation": "latents", "compile": True}
    for n in sizes:
        for name, kwargs in variants.items():
            env = gym.make_vec("worldsim/World-v0", num_envs=n, vectorization_mode="vector_entry_point",
                               checkpoint=str(world_path), device=str(device), max_episode_steps=10**9, **kwargs)
            out[f"{name}world_steps_per_s_N{n}"] = rate(env, n, max(2, iters // max(1, n // 16)),
                                                        warm=5 if kwargs.get("compile") else 1)
            env.close()
        out[f"peak_rss_mib_after_N{n}"] = peak_rss_mib()
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


SECTIONS = ("decode", "interactive", "engine", "vector", "train", "load")


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m envs.bench", description=__doc__.splitlines()[0])
    p.add_argument("--world", help="a world file (default: the default world's configs with random weights)")
    p.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections of {SECTIONS}")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--iters", type=int, default=100, help="timed iterations per figure")
    p.add_argument("--frames", type=int, default=5000, help="rollout length for the late-frame timing")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the world's)")
    p.add_argument("--guidance", type=float, default=None, help="action guidance scale (default: the world's; not 1 runs every sampling call on a second variant, the null action)")
    p.add_argument("--compile", action="store_true", help="interactive and vector: also time the torch.compile'd step")
    p.add_argument("--sizes", default="1,16,256,1024", help="vector env sizes N")
    p.add_argument("--dit", default="", help="DiT config overrides as key=value pairs, e.g. dim=256,depth=8")
    p.add_argument("--smoke", action="store_true", help="tiny configs and a few iterations: checks the benchmark runs")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    from worldsim.device import resolve_device

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
        result["vector"] = bench_vector(world_path, device, sizes, max(2, iters // 10), sync_n=4 if args.smoke else 16,
                                        compile=args.compile)
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
