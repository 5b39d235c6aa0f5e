"""``python train.py stage=loop``: the world-model loop, round by round, resumable at every phase.

Round k, in ``run_dir/loop/round-k/``:
  (a) ``play``   the current agent plays the real game for ``loop.play_frames`` frames (sampled actions and a
                 little exploration, on seeds of their own); its episodes join ``data_dir`` as shards tagged
                 with the round (:mod:`envs.loop.play`). Round 1 without a starting agent plays nothing.
  (b) ``world``  the world is fine-tuned from the previous round's (``loop.world_from=start``: from the loop's
                 first world) on all the data, the agent's episodes drawn ``loop.agent_data_weight`` times as
                 often; exported as ``round-k/<world>.safetensors``. Then, optionally, action guidance distilled
                 back into it (``loop.guidance_steps``) and its reward and termination heads refitted
                 (``loop.head_steps``).
  (c) ``agent``  the agent continues training in that world (``agent.train.init_from`` the previous agent);
                 ``round-k/<world>-agent.safetensors``. With ``loop.select_episodes``, ``select`` then lets it go
                 on only where it drives the real game at least as well as the agent it started from
                 (envs/loop/select.py).
  (d) ``score``  the agent drives the real game on held-out seeds (``stage=agent_eval``), next to what its
                 world predicts for it.
Each finished phase leaves ``<phase>.json`` (worldsim/training/rounds.py); a stopped round continues at its
first unfinished phase, and a phase resumes its own work (the trainers' states) or redoes it (play: the
round's partial shards are removed first; its episodes are a function of the agent and the seeds, so they
come out the same). After every round ``run_dir/loop/report.json`` and ``loop.png`` give the sample-efficiency
curve: the real return against the real frames used so far (the data's + every frame the agent played for
data; the scoring episodes are not counted, as in the Atari 100k protocol, and are never trained on).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from envs.agent.evaluation import AgentEvalConfig, evaluate_agent
from envs.agent.network import AgentConfig, load_agent
from envs.agent.record import record_episodes
from envs.agent.training import AgentTrainConfig, train_agent
from envs.loop.config import LoopConfig
from envs.loop.heads import refit_heads
from envs.loop.latent_reward import episode_rewards, fit_latent_reward, reward_values
from envs.loop.play import play_for_data, shard_sums
from envs.loop.select import choose, known_returns, selection_returns
from worldsim.data.dataset import EpisodeDataset
from worldsim.integrity import atomic_path, publish, write_json
from worldsim.shipped import checkpoints_dir
from worldsim.training.budget import Budget, BudgetReached
from worldsim.training.dynamics_trainer import DynamicsTrainConfig, train_dynamics
from worldsim.training.export import ExportConfig, export_world
from worldsim.training.rounds import Rounds
from worldsim.world import load_world


def _round_of(shard) -> int | None:
    p = shard.source.get("provenance") or {}
    r = p.get("loop_round")
    return None if r is None else int(r)


def remove_partial_round(data_dir: Path, k: int, loop: str) -> list[str]:
    """Delete the shards of round ``k`` of this loop (a play phase stopped before it finished) -> their names."""
    if not any(data_dir.glob("*.safetensors")):
        return []
    removed = []
    for shard in EpisodeDataset(data_dir, allow_mixed=True).shards:
        p = shard.source.get("provenance") or {}
        if _round_of(shard) == k and p.get("loop") == loop:
            shard.path.unlink()
            removed.append(shard.path.name)
    return removed


def data_frames(data_dir: Path, loop: str) -> int:
    """Real frames in ``data_dir`` that this loop did not play (the driver's data, earlier recordings)."""
    total = 0
    for shard in EpisodeDataset(data_dir, allow_mixed=True).shards:
        p = shard.source.get("provenance") or {}
        if p.get("loop") != loop:
            total += sum(int(e["length"]) for e in shard.episodes)
    return total


def _rel(path: str | Path, folder: Path) -> str:
    """A path as the round records keep it: inside the loop folder relative to it (the folder can move, e.g.
    committed and copied back), inside the project relative to the project (a shipped world, named by its
    default, is not the absolute path of the machine that ran the round), else as given."""
    resolved = Path(path).resolve()
    for base in (folder.resolve(), checkpoints_dir().parent):
        try:
            return str(resolved.relative_to(base))
        except ValueError:
            continue
    return str(path)


def _abs(path: str, folder: Path) -> Path:
    """A recorded path back: the loop folder's own, else as given where it exists (the working folder), else
    the project's (a round recorded from the project root, run from elsewhere)."""
    p = Path(path)
    if p.is_absolute():
        return p
    for candidate in (folder / p, p, checkpoints_dir().parent / p):
        if candidate.exists():
            return candidate
    return p


def _play(play: dict, folder: Path, data_dir: Path, k: int, loop_id: str) -> dict:
    """Phase (a) from its recorded inputs: play, record into ``data_dir`` -> frames, episodes, seeds, returns and
    the shards' checksums."""
    agent_file = _abs(play["agent_file"], folder)
    agent, world = load_agent(agent_file), load_world(_abs(play["world_file"], folder))
    traces, seeds = play_for_data(agent, world, int(play["target_frames"]), int(play["first_seed"]),
                                  float(play["explore"]), bool(play["sample"]), play.get("max_frames"))
    shards = record_episodes(data_dir, traces, seeds, world.source, str(agent_file),
                             {"loop": loop_id, "loop_round": k})
    return {"frames": int(sum(len(t["frames"]) for t in traces)), "episodes": len(traces), "seeds": seeds,
            "returns": [float(sum(t["rewards"])) for t in traces], "shards": shard_sums(shards)}


def _round_data_present(play: dict, data_dir: Path) -> bool:
    """Whether a finished round's shards are in ``data_dir``: all (True), none (False, to rebuild), or some
    (refused: the folder was changed by hand)."""
    there = [(data_dir / name).exists() for name in play["shards"]]
    if all(there):
        return True
    if any(there):
        raise ValueError(f"{data_dir} holds only some of this loop's shards {sorted(play['shards'])}; restore the "
                         "folder or remove the rest of them to rebuild them")
    return False


def _rebuilt_differently(cfg: LoopConfig, rounds: Rounds, k: int, play: dict, again: dict, data_dir: Path) -> dict:
    """A finished round's episodes, replayed on a fresh machine, differ from the recorded ones (the VAE and the
    agent ran on another CPU kind or thread count, and a sampled action came out otherwise). ``loop.rebuild``
    ``exact``: the rebuilt shards are removed and the loop stops, saying so; ``keep``: they are kept as the
    round's data, and ``round-k/rebuilt.json`` records which differ -> that record."""
    differ = sorted(n for n in set(again["shards"]) | set(play["shards"])
                    if again["shards"].get(n) != play["shards"].get(n))
    if cfg.rebuild == "keep":
        record = rounds.finish(k, "rebuilt", {"shards": again["shards"], "differ": differ,
                                              "frames": again["frames"], "returns": again["returns"]})
        print(f"round {k}: the rebuilt episodes differ from the recorded ones in {len(differ)} of "
              f"{len(play['shards'])} shards ({', '.join(differ)}); kept as this round's data (loop.rebuild=keep, "
              f"round-{k}/rebuilt.json)", flush=True)
        return record
    for name in again["shards"]:
        (data_dir / name).unlink(missing_ok=True)
    raise ValueError(f"round {k}'s rebuilt episodes differ from the recorded ones in {len(differ)} of "
                     f"{len(play['shards'])} shards ({', '.join(differ)}): this machine plays them otherwise (another "
                     "CPU kind or thread count). The rebuilt shards were removed; continue with the original data "
                     "folder, or accept the rebuilt episodes with loop.rebuild=keep")


def loop_id(folder: Path) -> str:
    """This loop's id (``folder/loop.json``, made on the first run): tags its shards in the data folder."""
    path = folder / "loop.json"
    if path.exists():
        return json.loads(path.read_text())["id"]
    import uuid

    folder.mkdir(parents=True, exist_ok=True)
    ident = uuid.uuid4().hex[:12]
    write_json(path, {"id": ident})
    return ident


def start_agent(agent_file: str | Path, folder: Path, started: bool) -> str:
    """The agent round 1 starts from, kept in the loop folder as ``round-0/<its name>`` when the loop starts, so
    that the records name that copy: the folder then holds every agent that played for its data, and a file later
    written over the one ``loop.agent`` named (a newer agent shipped under the same name) changes nothing in this
    loop. A loop that had started holds its copy already (that one is used, whatever ``loop.agent`` names now),
    or, started before copies were kept, goes on with ``loop.agent`` as given. -> the agent file to use."""
    kept = folder / "round-0" / Path(agent_file).name
    if kept.exists():
        return str(kept)
    if started:
        return str(agent_file)
    kept.parent.mkdir(parents=True, exist_ok=True)
    tmp = atomic_path(kept)
    shutil.copyfile(agent_file, tmp)
    publish(tmp, kept)
    return str(kept)


def run_loop(cfg: LoopConfig, *, world_file: str | Path, data_dir: str | Path, run_dir: str | Path,
             dynamics_train: DynamicsTrainConfig, agent_net: AgentConfig, agent_train: AgentTrainConfig,
             device: torch.device | str = "cpu", budget: Budget | None = None, name: str | None = None) -> dict:
    """Run (or continue) ``cfg.rounds`` rounds; -> the loop report. ``data_dir`` must hold the world's real
    data (the entry point collects it when missing)."""
    cfg.validate()
    budget = budget or Budget()
    data_dir, folder = Path(data_dir), Path(run_dir) / "loop"
    rounds = Rounds(folder)
    world_file = str(world_file)
    start_world = world_file  # loop.world_from=start: every round's fine-tune starts here
    agent_file = cfg.agent
    if agent_file is not None:
        agent_net = load_agent(agent_file).cfg  # the network it has; later rounds continue it
        agent_file = start_agent(agent_file, folder, started=rounds.done(1, "play") is not None)
    name = name or load_world(world_file).name
    if cfg.latent_reward_steps:  # a game whose rewards take many values is refused before any round, not in one
        reward_values(episode_rewards(EpisodeDataset(data_dir, allow_mixed=True)))
    loop_id_ = loop_id(folder)
    base_frames = data_frames(data_dir, loop_id_)
    played, seeds_used = 0, 0
    rows: list[dict[str, Any]] = []
    for k in range(1, cfg.rounds + 1):
        round_budget = budget.within(cfg.round_minutes)

        # (a) real play for data
        play = rounds.done(k, "play")
        rebuilt = rounds.done(k, "rebuilt")  # an earlier rebuild kept with loop.rebuild=keep
        if play is None:
            t0 = time.perf_counter()
            if agent_file is None:
                play = {"frames": 0, "episodes": 0, "seeds": [], "skipped": "no agent yet: round 1 trains one"}
            else:
                gone = remove_partial_round(data_dir, k, loop_id_)
                if gone:
                    print(f"round {k}: removed {len(gone)} shards of an unfinished play phase", flush=True)
                first = cfg.play_seed + seeds_used
                print(f"round {k}: the agent plays {cfg.play_frames} real frames for data (seeds from {first})",
                      flush=True)
                play = {"agent_file": _rel(agent_file, folder), "world_file": _rel(world_file, folder),
                        "first_seed": first, "target_frames": cfg.play_frames, "explore": cfg.explore,
                        "sample": cfg.sample, "max_frames": cfg.max_frames}
                play.update(_play(play, folder, data_dir, k, loop_id_))
            play["minutes"] = (time.perf_counter() - t0) / 60
            rounds.finish(k, "play", play)
        elif play["frames"] and not _round_data_present(play, data_dir):
            # A fresh machine: the round's episodes are rebuilt by its agent on its seeds, and checked.
            print(f"round {k}: rebuilding its {play['episodes']} real episodes into {data_dir} by replaying "
                  f"{play['agent_file']} on their seeds", flush=True)
            again = _play(play, folder, data_dir, k, loop_id_)
            if again["shards"] != play["shards"] and not (rebuilt and again["shards"] == rebuilt["shards"]):
                rebuilt = _rebuilt_differently(cfg, rounds, k, play, again, data_dir)
        played += int((rebuilt or play)["frames"])  # the episodes data_dir holds
        seeds_used += len(play["seeds"])
        if budget.expired():
            raise BudgetReached("loop", f"round {k} after its real play")

        # (b) the world, fine-tuned on all the data
        w = rounds.done(k, "world")
        if w is None:
            t0 = time.perf_counter()
            if not play["frames"]:
                w = {"world_file": _rel(world_file, folder), "skipped": "no new data", "steps": 0}
            else:
                base = world_file if cfg.world_from == "previous" else start_world
                prev = load_world(base)
                tcfg = replace(dynamics_train, steps=cfg.world_steps, lr=cfg.world_lr, warmup=cfg.world_warmup,
                               init_from=base, agent_data_weight=cfg.agent_data_weight, distill_guidance=0.0,
                               terminal_weight=cfg.terminal_weight,
                               ema_decay=cfg.world_ema_decay, pre_encode=_pre_encode(dynamics_train, cfg, data_dir),
                               train_only="all", eval_every=min(dynamics_train.eval_every, cfg.world_steps))
                wdir = rounds.dir(k) / "world"
                print(f"round {k}: fine-tuning the world {base} for {cfg.world_steps} steps", flush=True)
                _stage(budget, train_dynamics, prev.dit.cfg, tcfg, prev.sampler, data_dir, wdir, torch.device(device),
                       budget=_share(round_budget, cfg, cfg.world_share))
                out = export_world(ExportConfig(out=str(rounds.dir(k) / f"{name}.safetensors"), overwrite=True),
                                   data_dir, wdir, prev.sampler, name)
                w = {"world_file": _rel(out, folder), "steps": load_world(out).meta.get("dynamics_step"),
                     "from": _rel(base, folder), "agent_data_weight": cfg.agent_data_weight,
                     "terminal_weight": cfg.terminal_weight}
                if cfg.guidance_steps:
                    print(f"round {k}: guidance {cfg.guidance_scale} distilled into the fine-tuned world for "
                          f"{cfg.guidance_steps} steps", flush=True)
                    w["guidance_steps"] = _distill_guidance(cfg, dynamics_train, prev, Path(out), data_dir,
                                                            rounds.dir(k) / "guidance", name, device, budget,
                                                            _share(round_budget, cfg, cfg.guidance_share))
                    w["guidance_scale"] = cfg.guidance_scale
                if cfg.head_steps:
                    heads_train = replace(dynamics_train, terminal_weight=cfg.terminal_weight)
                    w["head_steps"] = _refit_heads(cfg, heads_train, Path(out), data_dir, rounds.dir(k) / "heads",
                                                   device, budget, _share(round_budget, cfg, cfg.head_share))
                if cfg.latent_reward_steps:
                    print(f"round {k}: fitting the world's latent reward on all the data for "
                          f"{cfg.latent_reward_steps} steps", flush=True)
                    w["latent_reward"] = _fit_latent_reward(cfg, Path(out), data_dir, budget,
                                                            _share(round_budget, cfg, cfg.latent_reward_share))
            w["minutes"] = (time.perf_counter() - t0) / 60
            rounds.finish(k, "world", w)
        world_file = str(_abs(w["world_file"], folder))

        # (c) the agent, continued in the new world
        a = rounds.done(k, "agent")
        if a is None:
            t0 = time.perf_counter()
            out = rounds.dir(k) / f"{name}-agent.safetensors"
            acfg = replace(agent_train, timesteps=cfg.agent_timesteps, init_from=agent_file)
            print(f"round {k}: training the agent in {world_file} for {cfg.agent_timesteps} decisions"
                  + (f" from {agent_file}" if agent_file else " from scratch"), flush=True)
            # overwrite: an unfinished phase's own agent file (its state may be gone); nothing else is there
            _stage(budget, train_agent, world_file, agent_net, acfg, rounds.dir(k), out, device, data_dir,
                   budget=_share(round_budget, cfg, cfg.agent_share), overwrite=True)
            meta = load_agent(out).meta
            a = {"agent_file": _rel(out, folder), "decisions": meta.get("decisions"),
                 "from": None if agent_file is None else _rel(agent_file, folder),
                 "minutes": (time.perf_counter() - t0) / 60}
            rounds.finish(k, "agent", a)
        agent_file, sel = _select(cfg, rounds, k, folder, a, world_file, device)
        played += int(sel["frames"]) if sel else 0

        # (d) scored in the real game
        e = rounds.done(k, "score")
        scored_now = e is None
        if e is None:
            t0 = time.perf_counter()
            ecfg = AgentEvalConfig(agent=agent_file, episodes=cfg.eval_episodes, seed=cfg.eval_seed,
                                   baselines=["random", "driver"] if k == 1 else [],
                                   world_episodes=cfg.world_episodes, max_frames=cfg.max_frames,
                                   deterministic=cfg.score_deterministic, out=str(rounds.dir(k) / "agent_eval"))
            print(f"round {k}: scoring the agent on {cfg.eval_episodes} real episodes", flush=True)
            report = evaluate_agent(agent_file, ecfg, world_file, device)
            e = {"real": _short(report["agent"]), "deterministic": cfg.score_deterministic,
                 "predicted": _short(report["agent"].get("predicted_in_world")),
                 "baselines": {k2: _short(v) for k2, v in report["baselines"].items()},
                 "minutes": (time.perf_counter() - t0) / 60}
            rounds.finish(k, "score", e)
        decisions = a["decisions"] if agent_file == str(_abs(a["agent_file"], folder)) else \
            load_agent(agent_file).meta.get("decisions")
        rows.append({"round": k, "real_frames": base_frames + played, "played_frames": int(play["frames"]),
                     "real_return": e["real"], "predicted_return": e["predicted"], "world_file": world_file,
                     "world_steps": w.get("steps", 0), "agent_file": agent_file, "agent_decisions": decisions,
                     "minutes": round(sum(float(x.get("minutes", 0)) for x in (play, w, a, sel or {}, e)), 2)})
        if sel:
            rows[-1]["selection"] = {"frames": sel["frames"], "kept": sel["kept"], "new_agent": sel["new"],
                                     **{who: sel["candidates"][sel[who]]["mean"] for who in ("new", "start")}}
        # A resumed loop shows the table once: after the last finished round, not after each one it passes.
        if scored_now or k == cfg.rounds or rounds.done(k + 1, "score") is None:
            write_report(folder, name, base_frames, rows, rounds.done(1, "score")["baselines"], cfg.baseline)
        if budget.expired() and k < cfg.rounds:
            raise BudgetReached("loop", f"the end of round {k} of {cfg.rounds}")
    return json.loads((folder / "report.json").read_text())


def _select(cfg: LoopConfig, rounds: Rounds, k: int, folder: Path, a: dict, world_file: str, device) -> tuple[str, dict | None]:
    """Phase (c'), ``loop.select_episodes``: the round's new agent and the agent it started from on the selection
    seeds, each played once (an agent already played there is read from the last round's record); the better goes
    on -> (the agent that goes on, the ``select.json`` record, or None without a selection)."""
    new = a["agent_file"]
    if not cfg.select_episodes or a.get("from") is None:  # off, or round 1 trained from scratch: nothing to compare
        return str(_abs(new, folder)), None
    s = rounds.done(k, "select")
    if s is None:
        t0 = time.perf_counter()
        seeds = [cfg.select_seed + i for i in range(cfg.select_episodes)]
        earlier = rounds.done(k - 1, "select") if k > 1 else None
        if earlier and earlier.get("max_frames") != cfg.max_frames:
            earlier = None
        candidates, frames = {}, 0
        for who in (a["from"], new):
            got = known_returns(earlier, who, seeds)
            if got is None:
                print(f"round {k}: selection, {who} on {len(seeds)} real episodes (seeds from {seeds[0]})", flush=True)
                got = selection_returns(_abs(who, folder), world_file, seeds, cfg.max_frames, device)
                frames += got["frames"]
            candidates[who] = got
        kept = choose(candidates, new, a["from"])
        s = {"seeds": seeds, "max_frames": cfg.max_frames, "candidates": candidates, "new": new, "start": a["from"],
             "kept": kept, "frames": frames, "minutes": (time.perf_counter() - t0) / 60}
        print(f"round {k}: selection {candidates[new]['mean']:.1f} (new) against {candidates[a['from']]['mean']:.1f} "
              f"(its start): {'the new agent' if kept == new else 'the start agent'} goes on", flush=True)
        rounds.finish(k, "select", s)
    return str(_abs(s["kept"], folder)), s


def _fresh_after(folder: Path, world_out: Path) -> None:
    """Start a step of the world phase afresh (its run folder emptied) when the file it continues, ``world_out``,
    is newer than the step's saved state: the fine-tune was resumed and exported again, so the step runs from that
    export, not from an older one."""
    state = folder / "dynamics_state.safetensors"
    if state.exists() and state.stat().st_mtime < world_out.stat().st_mtime:
        for f in folder.iterdir():
            if f.is_file():
                f.unlink()


def _distill_guidance(cfg: LoopConfig, dynamics_train: DynamicsTrainConfig, base, world_out: Path, data_dir: Path,
                      gdir: Path, name: str, device, process: Budget, share: Budget) -> int:
    """The world phase's guidance step (``loop.guidance_steps``): the fine-tuned world ``world_out`` (the network
    and sampler of ``base``, the world the fine-tune started from) learns, at sampler guidance 1, what it predicts
    under action guidance ``loop.guidance_scale`` (its own frozen copy teaches it), and is exported over
    ``world_out`` at sampler guidance 1 (the guidance is then in its weights) -> the steps made (0 where its share
    ran out before a save)."""
    _fresh_after(gdir, world_out)
    tcfg = replace(dynamics_train, steps=cfg.guidance_steps, lr=cfg.world_lr, warmup=cfg.world_warmup,
                   init_from=str(world_out), teacher=None, distill_guidance=cfg.guidance_scale, anchor_weight=0.0,
                   agent_data_weight=cfg.agent_data_weight, terminal_weight=cfg.terminal_weight,
                   ema_decay=cfg.world_ema_decay, pre_encode=False, train_only="all",
                   eval_every=min(dynamics_train.eval_every, cfg.guidance_steps))
    _stage(process, train_dynamics, base.dit.cfg, tcfg, base.sampler, data_dir, gdir, torch.device(device),
           budget=share)
    if not (gdir / "dynamics.safetensors").exists():
        return 0
    export_world(ExportConfig(out=str(world_out), overwrite=True), data_dir, gdir, base.sampler.override(guidance=1.0),
                 name)
    return int(load_world(world_out).meta.get("dynamics_step") or 0)


def _refit_heads(cfg: LoopConfig, dynamics_train: DynamicsTrainConfig, world_out: Path, data_dir: Path,
                 hdir: Path, device, process: Budget, share: Budget) -> int:
    """The world phase's second step (``loop.head_steps``): the heads of the fine-tuned world ``world_out`` trained
    on its frozen network (envs/loop/heads.py) and exported over it -> the steps made. The heads' run folder starts
    afresh whenever the fine-tune's export is newer than it (a fine-tune resumed and exported again is refitted
    from its own export, not from an older one)."""
    _fresh_after(hdir, world_out)
    made = _stage(process, refit_heads, world_out, data_dir, hdir, world_out, dynamics_train, steps=cfg.head_steps,
                  lr=cfg.head_lr, agent_weight=cfg.head_agent_weight, warmup=cfg.world_warmup,
                  ema_decay=cfg.world_ema_decay, reward_space=cfg.head_reward_space, head_pool=cfg.head_pool,
                  device=device, budget=share, overwrite=True)
    if made is None:  # its share ran out: what it made was exported, if anything
        exported = (hdir / "dynamics.safetensors").exists()
        made = int(load_world(world_out).meta.get("dynamics_step") or 0) if exported else 0
    return made


def _fit_latent_reward(cfg: LoopConfig, world_out: Path, data_dir: Path, process: Budget, share: Budget) -> dict:
    """The world phase's last step (``loop.latent_reward_steps``): the round world's latent reward fitted on all the
    data and written over ``world_out`` (atomically) -> its held-out report (steps made, return paid against the
    game's). A stop by the share writes what the steps made so far; one by the process's budget stops the loop
    (the round's world phase then runs again from its saved fine-tune)."""
    if share.left_s() <= 0:
        return {"steps": 0, "skipped": "its share of the round's minutes was spent"}
    report = fit_latent_reward(world_out, data_dir, world_out, steps=cfg.latent_reward_steps, seed=cfg.play_seed,
                               budget=share)
    if process.expired():
        raise BudgetReached("loop", "the latent reward's fit")
    return {k: report[k] for k in ("steps", "return_paid", "return_real", "per_frame_correlation")}


def _pre_encode(dynamics_train: DynamicsTrainConfig, cfg: LoopConfig, data_dir: Path) -> bool:
    """Whether the round's fine-tune encodes the whole dataset first: only when its steps read more frames than
    the data holds. A fresh machine has no latents, and a round's few hundred steps read far fewer frames than
    encoding all of them costs (Boxing on 2 cores: ~50 min for 124k frames, against ~40k frames read by 300
    steps); encoding each batch as it comes is cheaper then."""
    if not dynamics_train.pre_encode:
        return False
    reads = cfg.world_steps * dynamics_train.batch_size * dynamics_train.clip_length
    return reads >= EpisodeDataset(data_dir, allow_mixed=True).num_frames


def _share(round_budget: Budget, cfg: LoopConfig, frac: float) -> Budget:
    """A phase's budget: ``frac`` of the round's minutes, within what is left of the round."""
    return round_budget.within(None if cfg.round_minutes is None else frac * cfg.round_minutes)


def _stage(process: Budget, trainer, *args, **kwargs):
    """Run a trainer; a stop by its phase's share of the round counts as done, a stop by the process's budget
    (``train.minutes``) stops the loop. -> what the trainer returned, or None when its share ran out."""
    try:
        return trainer(*args, **kwargs)
    except BudgetReached:
        if process.expired():
            raise
        return None


def _short(summary: dict | None) -> dict | None:
    if summary is None:
        return None
    return {"mean": summary["mean"], "std": summary["std"], "episodes": summary["episodes"]}


def baseline_curve(log: str | Path | None) -> list[tuple[int, float]]:
    """(real frames, mean real return) along a ``agent.train.env=real`` run's log."""
    if not log:
        return []
    rows = [json.loads(x) for x in Path(log).read_text().splitlines() if x.strip()]
    return [(int(r["world_frames"]), float(r["real_return"])) for r in rows if r.get("real_return") is not None]


def write_report(folder: Path, name: str, base_frames: int, rows: list[dict], baselines: dict,
                 baseline_log: str | None) -> None:
    """``report.json`` (the round table) and ``loop.png`` (real and predicted return against real frames)."""
    report = {"world": name, "data_frames": base_frames, "rounds": rows, "baselines": baselines,
              "ppo_real": baseline_curve(baseline_log), "ppo_real_log": baseline_log}
    write_json(folder / "report.json", report)
    print_table(rows)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(6, 3.6))
    x = [r["real_frames"] for r in rows]
    ax.errorbar(x, [r["real_return"]["mean"] for r in rows], yerr=[r["real_return"]["std"] for r in rows],
                marker="o", capsize=3, label="agent, real game")
    pred = [(r["real_frames"], r["predicted_return"]["mean"]) for r in rows if r["predicted_return"]]
    if pred:
        ax.plot(*zip(*pred, strict=True), "s--", label="agent, world's prediction")
    if report["ppo_real"]:
        ax.plot(*zip(*report["ppo_real"], strict=True), "-", alpha=0.7, label="PPO in the real game")
    for key, style in (("random", ":"), ("driver", "-.")):
        if key in baselines and baselines[key]:
            ax.axhline(baselines[key]["mean"], ls=style, color="gray", label=key)
    ax.set_xlabel("real frames used")
    ax.set_ylabel("return")
    ax.set_title(f"{name}: the world-model loop")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(folder / "loop.png", dpi=90)
    plt.close(fig)


def print_table(rows: list[dict]) -> None:
    print("round | real frames | real return (mean ± std, N) | world's prediction | minutes", flush=True)
    for r in rows:
        real, pred = r["real_return"], r["predicted_return"]
        p = f"{pred['mean']:.1f} ± {pred['std']:.1f}" if pred else "-"
        sel = r.get("selection")
        kept = " (the start agent kept)" if sel and sel["kept"] != sel["new_agent"] else ""
        print(f"{r['round']} | {r['real_frames']} | {real['mean']:.1f} ± {real['std']:.1f} ({real['episodes']}){kept} | "
              f"{p} | {r['minutes']:.1f}", flush=True)
