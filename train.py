"""worldsim training entry: python train.py [world=NAME] stage=all|collect|vae|dynamics|export|eval|video [overrides].

Multi-GPU / multi-node: launch the vae or dynamics stage with torchrun, e.g.
  torchrun --nproc_per_node=8 train.py stage=dynamics
(DistributedDataParallel; every rank writes to the same run_dir, rank 0 alone saves.)

Stages (each resumes where a previous run of it stopped):
  all      collect, vae, dynamics, export and eval in turn, one process: a whole world in one command
           (recipe=tiny, cpu or gpu picks the sizes: configs/recipe/); run it again to resume
  collect  record episodes of the real env with its data policy into data_dir
  vae      train the causal VAE on them; writes run_dir/vae.safetensors
  dynamics train the diffusion-forcing DiT on VAE latents; writes run_dir/dynamics.safetensors
  eval     fidelity against the real env on held-out seeds (checkpoint=PATH, default: the run's export):
           eval.out/report.json, plots, mp4
  export   one world file (both networks, config, action space, keymap, start contexts):
           run_dir/<world>.safetensors, or export.out=PATH (export.overwrite=true to replace an existing file)
  video    export one dataset episode as an mp4 (video.episode=N)
  agent    PPO trains an agent inside a world only (agent.world=PATH, default: the shipped world):
           run_dir/agent/<world>-agent.safetensors (pip install -e ".[rl]")
  imitate  an agent fit to the data's driver (behaviour cloning) through the world's VAE:
           run_dir/imitate/<world>-agent.safetensors, to score or to continue (agent.train.init_from, loop.agent)
  agent_eval  that agent drives the REAL game on held-out tracks, next to random and the data driver;
           the last line is `real return: MEAN ± STD over N episodes`
  loop     rounds of: the agent plays the real game for data, the world is fine-tuned on it, the agent trains
           on in the new world and is scored in the real game (envs/loop/): run_dir/loop/report.json, loop.png

Every training stage takes train.minutes=M: at M minutes it saves, exports what it exports, prints the command
that continues it and exits with status 75.
"""

from __future__ import annotations

import json
import os
import signal
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from worldsim.locks import FolderInUse
from worldsim.training.budget import Budget, BudgetReached, TrainConfig


def _interrupt_on_sigterm() -> None:
    """A scheduler's kill (SIGTERM) saves and stops like Ctrl-C: resumable state is written, nothing is lost."""

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)


def _plain(node) -> dict:
    return OmegaConf.to_container(node, resolve=True) if node is not None else {}


# A user's mistake (a setting, a path, a file that is not what it should be): one line, exit 2.
USER_ERRORS = (ValueError, TypeError, FileNotFoundError, FileExistsError, ModuleNotFoundError, FolderInUse)

RESUMABLE = ("all", "collect", "vae", "dynamics", "agent", "loop")
"""Stages that continue where a stopped run of them left off."""

BUDGET_EXIT = 75
"""Exit status when train.minutes ran out (EX_TEMPFAIL: saved, run the same command again for more)."""


def continue_command() -> str:
    """The command line that continues this run: the same one (every stage resumes from its run folder)."""
    import shlex

    return " ".join(["python", "train.py", *(shlex.quote(a) for a in sys.argv[1:])])


@hydra.main(config_path="configs", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    _interrupt_on_sigterm()
    try:
        run_stage(cfg)
    except USER_ERRORS as e:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"error: {msg}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        if cfg.stage in RESUMABLE:
            print(f"stopped: run the same command again to resume stage={cfg.stage}", flush=True)
        elif cfg.stage == "imitate":
            print(f"stopped: stage=imitate keeps the data's latents it encoded ({cfg.data_dir}/latents-*/), not its "
                  "unfinished fit; run the same command again to encode on and fit from the start", flush=True)
        else:
            print(f"stopped: stage={cfg.stage} keeps nothing of an unfinished run (its files are written when it "
                  "ends); run the same command again to start it over", flush=True)
        raise SystemExit(130) from None
    except BudgetReached as e:
        print(f"{e}; continue with: {continue_command()}", flush=True)
        raise SystemExit(BUDGET_EXIT) from None
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


def _devices(cfg: DictConfig):
    """This process's device, and its rank when launched by torchrun (DDP; gloo on CPU, NCCL on CUDA)."""
    from worldsim.device import resolve_device
    from worldsim.training.loop import init_distributed

    return init_distributed(resolve_device(cfg.device))


PIPELINE = ("collect", "vae", "dynamics", "export", "eval")


def run_stage(cfg: DictConfig) -> None:
    from envs.games.source import SourceConfig
    from worldsim.config import from_dict

    source = from_dict(SourceConfig, _plain(cfg.world), "world")  # the real game behind world=NAME
    source.validate()
    train = from_dict(TrainConfig, _plain(cfg.train), "train")
    train.validate()
    budget = Budget(train.minutes)  # from now: the whole process, every stage of stage=all included
    if cfg.stage != "all":
        return _run(cfg, cfg.stage, source, budget)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise SystemExit("stage=all runs in one process; under torchrun, launch stage=vae and stage=dynamics on "
                         "their own and the other stages with plain python")
    for stage in PIPELINE:
        print(f"== stage={stage} ==", flush=True)
        _run(cfg, stage, source, budget)


def _run(cfg: DictConfig, stage: str, source, budget: Budget) -> None:
    from worldsim.config import from_dict
    from worldsim.locks import lock_folder

    main_rank = os.environ.get("RANK", "0") == "0"  # under torchrun, rank 0 holds the run folder's lock
    if stage in ("vae", "dynamics", "agent", "imitate", "loop") and main_rank:
        lock_folder(cfg.run_dir, "run folder")
    if stage == "collect":
        from envs.recording.collect import CollectConfig, collect

        lock_folder(cfg.data_dir, "data folder")
        collect(source, from_dict(CollectConfig, dict(_plain(cfg.collect), out=cfg.data_dir), "collect"))
    elif stage == "vae":
        from worldsim.models.vae import VAEConfig
        from worldsim.training.vae_trainer import VAETrainConfig, train_vae

        model_cfg = from_dict(VAEConfig, _plain(cfg.vae.model), "vae.model")
        train_cfg = from_dict(VAETrainConfig, _plain(cfg.vae.train), "vae.train")
        ranks, device = _devices(cfg)
        out = train_vae(model_cfg, train_cfg, cfg.data_dir, cfg.run_dir, device, ranks=ranks, budget=budget)
        if ranks.main:
            print(f"wrote {out}")
    elif stage == "dynamics":
        from worldsim.engine.sampler import SamplerConfig
        from worldsim.models.dit import DiTConfig
        from worldsim.training.dynamics_trainer import DynamicsTrainConfig, train_dynamics

        model_cfg = from_dict(DiTConfig, _plain(cfg.dynamics.model), "dynamics.model")
        train_cfg = from_dict(DynamicsTrainConfig, _plain(cfg.dynamics.train), "dynamics.train")
        sampler = from_dict(SamplerConfig, _plain(cfg.sampler), "sampler")
        ranks, device = _devices(cfg)
        out = train_dynamics(model_cfg, train_cfg, sampler, cfg.data_dir, cfg.run_dir, device, ranks, budget)
        if ranks.main:
            print(f"wrote {out}")
    elif stage == "export":
        from worldsim.engine.sampler import SamplerConfig
        from worldsim.training.export import ExportConfig, export_world

        export_cfg = from_dict(ExportConfig, _plain(cfg.export), "export")
        sampler = from_dict(SamplerConfig, _plain(cfg.sampler), "sampler")
        out = export_world(export_cfg, cfg.data_dir, cfg.run_dir, sampler, source.name)
        print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB): play it with `python play.py --checkpoint {out}`")
    elif stage == "eval":
        from envs.evaluation.evaluate import EvalConfig, evaluate_world

        eval_cfg = from_dict(EvalConfig, _plain(cfg.eval), "eval")
        from worldsim.training.export import run_export_path

        checkpoint = cfg.checkpoint or run_export_path(cfg.run_dir, source.name)
        _same_game(source, _world_env_id(checkpoint), f"checkpoint={checkpoint}")
        report = evaluate_world(checkpoint, eval_cfg)
        memory = {k: v for k, v in (report["track_memory"] or {}).items() if k != "road_iou_by_frame"}
        print(json.dumps({**{k: report[k] for k in ("fidelity_by_horizon", "realism", "second_driver", "warp_error",
                                                    "controllability", "reward_termination")},
                          "track_memory": memory, "goals": report["goals"]}, indent=1))
        print(f"wrote {eval_cfg.out}/report.json, psnr_by_horizon.png, long_horizon.png, side_by_side.mp4")
    elif stage == "video":
        from worldsim.data.dataset import EpisodeDataset
        from worldsim.video import write_mp4

        data = EpisodeDataset(cfg.data_dir)
        n = cfg.video.episode
        if not 0 <= n < len(data):
            raise ValueError(f"video.episode={n}: {cfg.data_dir} has episodes 0..{len(data) - 1}")
        ep = data.episode(n)
        out = write_mp4(cfg.video.out, ep.frames, data.source.get("fps", 30), scale=cfg.video.scale)
        print(f"wrote {out} ({len(ep)} frames)")
    elif stage == "agent":
        from envs.agent.network import AgentConfig
        from envs.agent.training import AgentTrainConfig, train_agent

        net_cfg = from_dict(AgentConfig, _plain(cfg.agent.net), "agent.net")
        train_cfg = from_dict(AgentTrainConfig, _plain(cfg.agent.train), "agent.train")
        world = _agent_world(cfg, source)
        _same_game(source, _world_env_id(world), f"the world {world}")
        out = train_agent(world, net_cfg, train_cfg, cfg.run_dir, cfg.agent.out, cfg.agent.device,
                          cfg.data_dir, budget=budget, overwrite=cfg.agent.overwrite)
        print(f"wrote {out}: score it in the real game with `python train.py world={source.name} stage=agent_eval "
              f"agent_eval.agent={out}`")
    elif stage == "imitate":
        from envs.agent.imitation import ImitateConfig, imitate
        from envs.agent.network import AgentConfig
        from envs.agent.training import AgentTrainConfig

        net_cfg = from_dict(AgentConfig, _plain(cfg.agent.net), "agent.net")
        imitate_cfg = from_dict(ImitateConfig, _plain(cfg.agent.imitate), "agent.imitate")
        gamma = from_dict(AgentTrainConfig, _plain(cfg.agent.train), "agent.train").gamma
        world = _agent_world(cfg, source)
        _same_game(source, _world_env_id(world), f"the world {world}")
        out = imitate(world, net_cfg, imitate_cfg, cfg.data_dir, cfg.run_dir, cfg.agent.out, gamma,
                      cfg.agent.device, budget=budget, overwrite=cfg.agent.overwrite)
        print(f"wrote {out}: score it in the real game with `python train.py world={source.name} stage=agent_eval "
              f"agent_eval.agent={out}`, or continue it in the world with `stage=agent agent.train.init_from={out}`")
    elif stage == "agent_eval":
        from envs.agent.evaluation import AgentEvalConfig, evaluate_agent

        eval_cfg = from_dict(AgentEvalConfig, _plain(cfg.agent_eval), "agent_eval")
        if eval_cfg.record:
            lock_folder(eval_cfg.record, "data folder")
        agent = eval_cfg.agent or cfg.agent.out or f"{cfg.run_dir}/agent/{source.name}-agent.safetensors"
        from envs.agent.network import load_agent

        _same_game(source, load_agent(agent).world.get("source", {}).get("env_id"), f"the agent {agent}")
        report = evaluate_agent(agent, eval_cfg, cfg.agent.world or cfg.checkpoint, cfg.agent.device)
        print(f"wrote {eval_cfg.out}/report.json, returns.png")
        r = report["agent"]
        print(f"real return: {r['mean']:.1f} ± {r['std']:.1f} over {r['episodes']} episodes")
    elif stage == "loop":
        _loop(cfg, source, budget)
    else:
        raise ValueError(f"unknown stage={stage!r}; use all, collect, vae, dynamics, export, eval, video, agent, "
                         "imitate, agent_eval or loop")


def _loop(cfg: DictConfig, source, budget: Budget) -> None:
    """stage=loop: rounds of real play, world fine-tuning, agent training and real scoring (envs/loop/)."""
    from pathlib import Path

    from envs.agent.network import AgentConfig
    from envs.agent.training import AgentTrainConfig
    from envs.loop.config import LoopConfig
    from envs.loop.run import run_loop
    from envs.recording.collect import CollectConfig, collect
    from worldsim.config import from_dict
    from worldsim.device import resolve_device
    from worldsim.locks import lock_folder
    from worldsim.training.dynamics_trainer import DynamicsTrainConfig

    loop = from_dict(LoopConfig, _plain(cfg.loop), "loop")
    loop.validate()
    lock_folder(cfg.data_dir, "data folder")
    if not any(Path(cfg.data_dir).glob("*.safetensors")):  # a fresh machine: the seeded driver data first
        print(f"no data in {cfg.data_dir}: collecting the driver's (stage=collect, collect.seed={cfg.collect.seed})",
              flush=True)
        collect(source, from_dict(CollectConfig, dict(_plain(cfg.collect), out=cfg.data_dir), "collect"))
    report = run_loop(loop, world_file=loop.world or _agent_world(cfg, source), data_dir=cfg.data_dir,
                      run_dir=cfg.run_dir, device=resolve_device(cfg.device),
                      dynamics_train=from_dict(DynamicsTrainConfig, _plain(cfg.dynamics.train), "dynamics.train"),
                      agent_net=from_dict(AgentConfig, _plain(cfg.agent.net), "agent.net"),
                      agent_train=from_dict(AgentTrainConfig, _plain(cfg.agent.train), "agent.train"),
                      budget=budget, name=source.name)
    last = report["rounds"][-1]
    print(f"wrote {cfg.run_dir}/loop/report.json, loop.png")
    print(f"round {last['round']}: real return {last['real_return']['mean']:.1f} ± {last['real_return']['std']:.1f} "
          f"over {last['real_return']['episodes']} episodes at {last['real_frames']} real frames")


def _world_given() -> bool:
    """Whether the command line chose the world (world=NAME), rather than the default."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return any(o.split("=", 1)[0].lstrip("+~") == "world" for o in HydraConfig.get().overrides.task)
    except (ImportError, ValueError):
        return False


def _same_game(source, env_id: str | None, what: str) -> None:
    """Refuse a file of another game than the world=NAME the command line chose (without world=, the file's
    own game is used)."""
    if _world_given() and env_id is not None and env_id != source.env_id:
        raise ValueError(f"world={source.name} is {source.env_id}, but {what} is {env_id}; give a file of "
                         f"{source.env_id} or leave world= out to use the file's own game")


def _world_env_id(path) -> str | None:
    from worldsim.checkpoint import read_checkpoint
    from worldsim.world import WORLD_KIND

    return read_checkpoint(path, WORLD_KIND)[0].get("source", {}).get("env_id")


def _agent_world(cfg: DictConfig, source):
    """The world file an agent learns in: agent.world, else checkpoint, else the shipped world of world.name."""
    from worldsim.world import world_path

    return cfg.agent.world or cfg.checkpoint or world_path(source.name)


def check_overrides(argv: list[str]) -> None:
    """Compose the config once before Hydra runs, so a mistyped setting is one line and exit 2 (Hydra's own
    report is several; HYDRA_FULL_ERROR=1 leaves it to Hydra)."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1" or any(a.startswith("-") for a in argv):
        return
    from pathlib import Path

    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(str(Path(__file__).resolve().parent / "configs"), version_base="1.3"):
            compose("config", overrides=argv)
    except (HydraException, OmegaConfBaseException) as e:
        text = " ".join(str(e).split()).split(" Config search path")[0]
        if "Could not override" in text or "not in struct" in text:
            key = text.split("'")[1] if "'" in text else text
            text = f"no setting {key!r} (the settings are the dataclasses envs/settings.py names; to add a new key, +{key}=...)"
        print(f"error: {text}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    from envs.settings import register

    register()  # every default, from the dataclasses, composed before the YAML files
    check_overrides(sys.argv[1:])
    main()
