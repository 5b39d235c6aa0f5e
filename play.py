"""Play a world with the keyboard: python play.py [--world NAME | --checkpoint PATH] [--real | --compare].

Keys: the world's keymap (CarRacing: arrows), Esc quit, R reset, P pause, H HUD,
F9 record on/off (episode shard + mp4), F12 screenshot, [ ] sampling steps, - = guidance.
Without a display: python play.py --headless --frames 300 --record out.mp4 --policy scripted
An agent at the wheel: python play.py --policy agent [--agent FILE] (with --compare it drives the real game
from real frames and the world follows its actions side by side).
"""

from __future__ import annotations

import argparse
import sys


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python play.py", description=__doc__.splitlines()[0])
    which = p.add_mutually_exclusive_group()
    which.add_argument("--world", help="a shipped world by name (default: carracing)")
    which.add_argument("--checkpoint", help="a world file made by `python train.py stage=export`")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--real", action="store_true",
                      help="play the real source env with the same keys; every episode is recorded as training data")
    mode.add_argument("--compare", action="store_true", help="the real env and the world model side by side, same keys")
    p.add_argument("--headless", action="store_true", help="no window: a policy plays and --record writes the video")
    p.add_argument("--frames", type=int, default=300, help="frames to run headless")
    p.add_argument("--record", help="headless: write the frames shown to this mp4")
    p.add_argument("--record-scale", type=int, default=4, help="headless: pixels per frame pixel in the video")
    p.add_argument("--policy", choices=["random", "scripted", "agent"], default=None,
                   help="who plays: headless default scripted; agent (an agent file, --agent) also in a window")
    p.add_argument("--agent", help="the agent file for --policy agent (default: checkpoints/<world>-agent.safetensors)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--scale", type=int, default=8, help="window pixels per frame pixel")
    p.add_argument("--steps", type=int, help="sampling steps (1-8; default: the world's)")
    p.add_argument("--guidance", type=float, help="action guidance scale (default: the world's)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model step (slow start, faster after)")
    p.add_argument("--attend", type=int, default=None, metavar="FRAMES",
                   help="frames each new frame attends to (default: the world's); CarRacing at 8 plays at the game's "
                        "50 fps on a 2-core CPU, a little less true to the real game (BENCHMARKS.md)")
    p.add_argument("--fps", type=float, help="frame rate to keep (default: the world's)")
    p.add_argument("--seed", type=int, default=None, help="seed of the first start (default: random)")
    p.add_argument("--record-dir", default="recordings", help="where F9 recordings go (one folder per world)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    if args.agent and args.policy != "agent":
        print("error: --agent chooses the agent of --policy agent; add --policy agent (or leave --agent out)",
              file=sys.stderr)
        return 2
    if args.policy is None and args.headless:
        args.policy = "scripted"
    import numpy as np

    from envs.games.keymaps import Keymap
    from envs.games.policies import RandomPolicy, ScriptedPolicy
    from envs.games.source import source_game
    from envs.play.game import Game, Side
    from envs.window import NoDisplayError, Window
    from envs.worldenv.env import WorldModelEnv
    from worldsim.checkpoint import CheckpointError
    from worldsim.device import resolve_device
    from worldsim.video import write_mp4

    try:
        model = WorldModelEnv(args.checkpoint, args.world or (None if args.checkpoint else "carracing"),
                              args.device, args.steps, args.guidance,
                              compile=args.compile, window=args.attend)
    except (CheckpointError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    world = model.world
    sides = []
    if args.real or args.compare:
        try:
            sw = source_game(world.source)
            real_env = sw.make_env()
        except Exception as e:  # the real env needs its own extras (box2d, ale-py)
            print(f"error: cannot make the real env {world.source.get('env_id')!r}: {e}", file=sys.stderr)
            return 2
        who = f"play.py --policy {args.policy}" if args.policy else "human"
        source = dict(sw.describe(real_env), policy=who, provenance={"kind": "real", "policy": who})
        if args.real and not args.policy:  # human demonstrations become training data
            from envs.recording.episodes import RecordEpisodes

            real_env = RecordEpisodes(real_env, f"{args.record_dir}/{world.name}-human", source=source)
            print(f"recording every episode into {args.record_dir}/{world.name}-human (train on it with "
                  f"data_dir={args.record_dir}/{world.name}-human)")
        sides.append(Side("real " + world.source.get("env_id", ""), real_env, source))
    if not args.real:
        sides.append(Side(f"world model ({world.name})", model, world.source))
    else:
        model.close()
    keymap = Keymap.from_dict(world.source["keymap"])
    fps = args.fps or world.fps
    device = str(resolve_device(args.device))
    policy = None
    if args.policy == "agent":
        from envs.agent.network import load_agent
        from envs.agent.pilot import Pilot
        from worldsim.shipped import checkpoints_dir

        path = args.agent or str(checkpoints_dir() / f"{world.name}-agent.safetensors")
        try:
            agent = load_agent(path)
        except CheckpointError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        from envs.agent.view import agent_world_mismatch

        why = agent_world_mismatch(agent.world, world)
        if why:
            print(f"error: --agent {path}: {why}", file=sys.stderr)
            return 2
        policy = Pilot(agent, sides[0].env, world)
    elif args.headless:
        if args.policy == "random":
            policy = RandomPolicy(sides[0].env.action_space, np.random.default_rng(args.seed))
        else:
            up = keymap.action_for(["up"])  # e.g. gas: held between the other keys, so the demo moves
            policy = ScriptedPolicy([a for _, a in keymap.bindings if a != up], default=up)
    window = None
    if not args.headless:
        try:
            window = Window(f"worldsim: {world.name}", (world.frame_size, world.frame_size * len(sides)), args.scale)
        except NoDisplayError as e:
            print(f"error: {e}. On a machine without a display use --headless "
                  "(e.g. python play.py --headless --frames 300 --record out.mp4)", file=sys.stderr)
            return 2
    game = Game(sides, keymap, fps, window, policy, record_dir=args.record_dir, seed=args.seed, device=device)
    video = [] if args.record else None
    try:
        game.run(args.frames if args.headless else None, video)
    except KeyboardInterrupt:
        pass
    finally:
        game.close()
    if args.record and video:
        out = write_mp4(args.record, np.stack(video), fps, scale=args.record_scale)
        print(f"wrote {out} ({len(video)} frames)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
