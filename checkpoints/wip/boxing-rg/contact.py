"""Ad-hoc: where an agent's bouts go, in the game and in a world (run from the project root). For the real
bouts it reads episode shards (the loop's recorded bouts of the agent); for the world it plays the agent in
the world as ``stage=agent_eval``'s prediction does (whole bouts, most likely action, the world's start
contexts) and decodes every frame. Per frame: the distance between the two boxers' centroids (px at 64x64),
and the reward (the game's, or the world's head). Prints, for each: frames, the share of frames with the
boxers within 10 / 14 / 18 px, the mean distance, the reward per 1,000 frames, and the reward per 1,000
frames when within 14 px.
``python checkpoints/wip/boxing-rg/contact.py --agent AGENT --shards 'data/boxing/ep00000[7-9]*.safetensors'
--world WORLD [WORLD ...] [--episodes 4] [--heads WORLD ...]``"""

import argparse
import glob
import sys


def stats(label: str, frames, rewards) -> None:
    import numpy as np

    from envs.games.objects.boxing import REACH, find_boxers, punch_rates

    b = find_boxers(frames)
    d = np.linalg.norm(b["white"][1] - b["black"][1], axis=-1)  # NaN where one is not found
    ok = ~np.isnan(d)
    near = ok & (d < REACH)
    r = np.asarray(rewards, np.float64)
    arm = punch_rates(frames)  # the share of in-reach frames with each boxer's arm out
    print(f"{label}: {len(d)} frames, both found {ok.mean():.3f}, within 10/14/18 px "
          f"{(d[ok] < 10).mean():.3f}/{(d[ok] < 14).mean():.3f}/{(d[ok] < 18).mean():.3f}, mean distance "
          f"{d[ok].mean():.1f}, reward per 1000 frames {1000 * r.mean():.1f} (+ {1000 * r.clip(0).mean():.1f}, "
          f"- {1000 * r.clip(None, 0).mean():.1f}), within 14 px {1000 * r[near].mean():.1f}; arm out within 14 px: "
          f"white {arm['white'] or 0:.3f}, black {arm['black'] or 0:.3f}",
          flush=True)


def real(paths: list[str], heads: list[str], head_bouts: int) -> None:
    import numpy as np

    from envs.evaluation.heads import teacher_forced_heads
    from worldsim.data.episodes import EpisodeShard
    from worldsim.world import load_world

    eps = []
    for p in paths:
        s = EpisodeShard(p)
        eps += [s.read(j) for j in range(len(s))]
    stats(f"game ({len(eps)} bouts)", np.concatenate([e["frames"] for e in eps]),
          np.concatenate([e["rewards"] for e in eps]))
    for w in heads:  # the world's reward head on real frames (teacher-forced), split by what the game paid
        world = load_world(w)
        pred = np.concatenate([teacher_forced_heads(world, e["frames"], e["actions"])[0][1:] for e in eps[:head_bouts]])
        r = np.concatenate([e["rewards"][1:] for e in eps[:head_bouts]]).astype(np.float64)
        print(f"head of {w} on {head_bouts} real bouts: game +{(r > 0).sum():.0f} / -{(r < 0).sum():.0f} punches, "
              f"head sum where the game paid +1 {pred[r > 0].sum():.1f}, -1 {pred[r < 0].sum():.1f}, 0 "
              f"{pred[r == 0].sum():.1f} (positive part {pred[r == 0].clip(0).sum():.1f})", flush=True)


def world(agent_file: str, world_file: str, episodes: int, seed: int = 500000000, sampler: dict | None = None) -> None:
    import numpy as np

    from envs.agent.in_world import AgentWorlds
    from envs.agent.network import load_agent
    from envs.worldenv.core import WorldCore

    agent = load_agent(agent_file)
    train = agent.meta.get("train", {})
    core = WorldCore(episodes, world_file, device="cpu", dtype=train.get("dtype", "auto"), observation="latents",
                     window=train.get("window"))
    if sampler:  # other sampling settings than the file's (steps, start_level, guidance)
        core.sim = core.world.simulator(episodes, core.sim.sampler.override(**sampler))
    worlds = AgentWorlds(core, agent.cfg, int(core.world.episode_limit), seed=seed)
    core.observation = "frames"  # decode every frame; the agent still sees the latents (core.latents)
    seen = []
    step = core.step
    core.step = lambda a, checked=False: seen.append(step(a, checked)) or seen[-1]
    obs = worlds.reset()
    alive = np.ones(episodes, bool)
    frames, rewards = [], []
    while alive.any():
        obs, _, term, trunc, _ = worlds.step(agent.net.act(obs, None), autoreset=False)
        f, r = seen[-1][0], seen[-1][1]
        frames.append(f[alive])
        rewards.append(r[alive])
        alive &= ~(term | trunc)
    stats(f"world {world_file} {sampler or ''} ({episodes} bouts)", np.concatenate(frames), np.concatenate(rewards))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--agent", required=True)
    p.add_argument("--shards", default=None)
    p.add_argument("--world", nargs="*", default=[])
    p.add_argument("--episodes", type=int, default=4)
    p.add_argument("--heads", nargs="*", default=[], help="worlds whose reward head to read on the real bouts")
    p.add_argument("--head-bouts", type=int, default=4)
    p.add_argument("--steps", type=int, default=None, help="sampling steps a frame (default: the file's)")
    p.add_argument("--start-level", type=float, default=None, help="sampling start level (default: the file's)")
    a = p.parse_args()
    if a.shards:
        real(sorted(glob.glob(a.shards)), a.heads, a.head_bouts)
    for w in a.world:
        world(a.agent, w, a.episodes, sampler={k: v for k, v in (("steps", a.steps), ("start_level", a.start_level))
                                               if v is not None})


if __name__ == "__main__":
    sys.path.insert(0, ".")
    main()
