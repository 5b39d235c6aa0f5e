"""Diffusion-forcing training of the DiT on VAE latents (rectified flow, per-frame levels)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader

from worldsim.checkpoint import CheckpointError, load_module, read_checkpoint, save_checkpoint
from worldsim.config import to_dict
from worldsim.data.dataset import ClipDataset, EpisodeDataset
from worldsim.data.latents import LatentStore, ensure_latents, vae_file_id
from worldsim.diffusion.flow import add_noise, draft_inputs, sample_levels, velocity
from worldsim.engine.latent_space import LatentEncoder
from worldsim.engine.sampler import SamplerConfig, check_steps
from worldsim.engine.simulator import Simulator
from worldsim.frames import to_model
from worldsim.models.dit import DiT, DiTConfig
from worldsim.models.vae import load_vae, save_vae
from worldsim.training.budget import UNLIMITED, Budget
from worldsim.training.ema import EMA
from worldsim.training.guidance_distill import distill_loss, draft_distill_loss
from worldsim.training.history import HISTORY, RunHistory, history_of
from worldsim.training.loop import Ranks, StepBatches, autocast_dtype, run_training
from worldsim.training.rollout_context import rollout_loss
from worldsim.training.state import load_state, save_state
from worldsim.world import WORLD_KIND, load_world

DYNAMICS_KIND = "dynamics"


@dataclass
class DynamicsTrainConfig:
    """Optimisation of the dynamics DiT (``dynamics.train.*`` overrides)."""

    steps: int = 50_000
    """Total optimiser steps (a resumed run continues up to this)."""
    batch_size: int = 8
    """Clips per step."""
    clip_length: int = 16
    """Frames per clip."""
    lr: float = 3e-4
    """Peak AdamW learning rate (linear warm-up, cosine decay to 10%)."""
    warmup: int = 500
    """Warm-up steps."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    level_mean: float = 0.0
    """Mean of the logit-normal level distribution."""
    level_std: float = 1.0
    """Std of the logit-normal level distribution."""
    history_prob: float = 0.5
    """Probability that a clip has a clean-ish history: frames before a random split sit at levels in [0, context_max]."""
    context_max: float = 0.2
    """Highest noise level of history frames (inference uses sampler.context_level)."""
    null_action_prob: float = 0.1
    """Probability of swapping in the null action per frame (enables action guidance)."""
    reward_weight: float = 0.5
    """Weight of the reward loss (MSE in the model's ``reward_space``: symlog or raw), on frames at history levels."""
    reward_negative_weight: float = 1.0
    """The reward loss of frames the game paid less than 0 counts this many times (e.g. Boxing's taken punches,
    which a head fit with 1 pays at a tenth of their size on real bouts while it pays landed ones at a quarter)."""
    done_weight: float = 0.5
    """Weight of the termination loss (binary cross-entropy), on frames at history levels."""
    motion_weight: float = 0.0
    """Extra flow-loss weight on latent positions that change from the previous frame (``latent_motion``): they
    count ``1 + motion_weight`` times. A small moving object (Pong's ball: one latent position of 256 on a court
    that never changes) is nothing in the mean and is averaged away without it; 0 weights every position alike."""
    motion_threshold: float = 0.5
    """Change (normalised latent units, largest over channels) at which a position counts fully as moving."""
    grad_clip: float = 1.0
    """Gradient-norm clipping."""
    ema_decay: float = 0.999
    """EMA decay of the exported weights."""
    eval_every: int = 1000
    """Steps between held-out evaluations, sample rollouts and checkpoints."""
    log_every: int = 50
    """Steps between log lines."""
    heldout_every: int = 10
    """Every n-th episode (by global index) is held out."""
    loader_workers: int = 0
    """DataLoader worker processes."""
    precision: str = "auto"
    """``auto`` (bf16 autocast on GPUs that have it, else fp32), ``bf16`` or ``fp32``."""
    pre_encode: bool = True
    """Encode every episode once with the VAE (``data_dir/latents-<vae id>/``, rebuilt when the VAE or the
    frames change) and train on those latents instead of running the encoder on every batch
    (worldsim/data/latents.py: episodes are encoded whole, so a clip's first frames see their real past)."""
    train_only: str = "all"
    """``all`` (every weight) or ``heads``: only the reward and termination heads learn, on the frozen network
    of ``init_from`` (its frames stay exactly as they were: e.g. to refit the reward head in another
    ``reward_space`` in minutes, without retraining the world)."""
    agent_data_weight: float = 1.0
    """Clips of episodes an agent played in the real game (``agent_eval.record``, ``stage=loop``: the states
    the agent reaches, where the world was wrong) are drawn this many times as often as other clips (1: every
    clip alike)."""
    terminal_weight: float = 1.0
    """The clip that ends on an episode's terminal frame is drawn this many times as often as other clips (with
    ``agent_data_weight`` multiplied in): the termination head's only positive examples, one per ended episode."""
    seed: int = 0
    """Seed of initialisation, levels and data order."""
    init_from: str | None = None
    """Fine-tuning: a fresh run starts from this dynamics checkpoint's (EMA) weights instead of a random
    initialisation; modules the file lacks (a newer architecture option) keep their initialisation.
    Ignored when the run resumes from its own state. A dynamics checkpoint or a world file (whose VAE
    becomes the run's when the run folder has none)."""
    distill_guidance: float = 0.0
    """Guidance distillation (worldsim/training/guidance_distill.py): above 0, the model learns to predict
    with the action what the ``init_from`` model predicts under action guidance at this scale, so the
    world keeps that key response at sampler guidance 1. Needs ``init_from`` (of the same architecture; a
    ``commit=draft`` world distils on the draft layout from a draft world or from a two-call world, which so
    becomes a one-call world in one run: at scale 1 its own, already distilled, key response is kept)."""
    teacher: str | None = None
    """Guidance distillation: the model whose guided predictions are distilled (a dynamics checkpoint or a world
    file), when it is not ``init_from``: e.g. a one-call world continued from its own file while a two-call world
    of the same lineage teaches it."""
    distill_steps: int = 1
    """Step distillation (with ``distill_guidance``): the teacher makes each branch's frame in this many Euler
    steps of its guided sampler (1-8, from the sampler's start level down to 0, as the engine at that many
    sampling steps), every branch starting as the sampler does, and the student learns to land on that frame in
    one step. A one-step sampler that starts high returns the mean of the frames that could follow (Boxing's
    punching arm is averaged away); several steps commit to one of them. 1: the teacher's velocity itself."""
    rollout_frames: int = 0
    """Training on the world's own frames (worldsim/training/rollout_context.py): above 0, every step the world
    also plays this many frames of each clip itself (as the engine plays, from the real frames before them; at
    most clip_length - 2) and learns the real frames that follow with its own as context, ``rollout_weight``
    times the flow loss of the real clip; for a two-call world (``commit=pass``). Costs this many no-gradient
    passes and a second training pass a step. Measured once (Boxing, K 6, 342 steps: wip/README.md ``boxing-ro/``):
    the keys grew as strong as the game's, but drifted boxers faded instead of coming back; try short runs first."""
    rollout_weight: float = 1.0
    distill_rescale: float = 0.0
    """Guidance distillation (and the anchor's guidance): the share (0-1) of guidance rescaling applied to the
    teacher's guided targets (:func:`worldsim.training.guidance_distill.rescaled`): each target frame keeps the
    per-channel mean and spread of the teacher's prediction with the action and no guidance, so the distilled keys
    come without guidance's over-saturated frames (a real-vs-generated classifier told CarRacing's guidance-distilled
    one-call frames from the game's 0.90 of the time, its teacher's 0.76: wip/README.md). 0: plain guidance."""
    distill_branches: int = 8
    """Guidance distillation: next-frame branches per clip (the clip's last frames)."""
    distill_start_prob: float = 0.5
    """Guidance distillation: share of branches that start, as the sampler does, from the previous frame
    noised to the sampler's start level (the others: their own frame at a sampled level)."""
    anchor_weight: float = 0.0
    """Anchored fine-tuning: above 0, every step adds this weight times the guidance-distillation loss against the
    teacher (``teacher`` or ``init_from``, frozen) at scale ``anchor_guidance`` on the same clips to the plain
    flow loss, so a fine-tune on new data keeps what its start did well where the data does not say otherwise.
    Plain flow matching learns the unguided velocity and so undoes a key response that guidance distillation put
    in the weights (Boxing's ``boxing-gd``: 0.98 -> 0.93 of the game's in a 400-step loop round, and the shipped
    world's key test failed on it). Costs a teacher pass and a second student pass a step (Boxing, 2-core CPU,
    bf16: 4.5 s against 2.0 s a step; 2.5 s on the driver's clips only); not with ``distill_guidance`` (which replaces
    the flow loss). A ``commit=draft`` world anchors its one-call flow loss to its teacher's frames on the draft
    layout (a two-call teacher's from its own sampler's start level): guidance distilled into a one-call world
    while the real frames still count, where distillation alone loses realism (CarRacing, wip/README.md)."""
    anchor_guidance: float = 1.0
    """Anchored fine-tuning: the teacher's guidance scale in the anchor (1: its own predictions)."""
    anchor_actions: list[int] | None = None
    """Anchored fine-tuning: the discrete actions whose next frames the anchor holds (None: all), e.g. Boxing's
    moves without a punch (``[0,2,3,4,5,6,7,8,9]``), so the start world's movement is kept while what a punch
    does is learnt from the data alone."""
    anchor_agent_data: bool = True
    """Anchored fine-tuning: whether the anchor holds on clips of agent-played episodes too; false: only on the
    others (the driver's), so the agent's episodes are learnt as they are, where the start world was wrong, and
    the anchor costs only the driver clips' share of a batch."""


def distillable(teacher: DiTConfig, student: DiTConfig) -> bool:
    """Whether ``teacher`` can teach ``student``: the same architecture, and the same commit mode or a two-call
    teacher of a one-call (``commit=draft``) student."""
    t, s = to_dict(teacher), to_dict(student)
    if t["commit"] == "pass" and s["commit"] == "draft":
        t = {**t, "commit": "draft", "draft_level": s["draft_level"]}
    return t == s


def symlog(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.log1p(x.abs())


def clip_levels(b: int, t: int, cfg: DynamicsTrainConfig, gen: torch.Generator, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-frame levels (B, T) and the mask of 'history' frames (B, T), where heads are trained."""
    levels = sample_levels(b, t, cfg.level_mean, cfg.level_std, gen).to(device)
    split = torch.randint(1, t, (b, 1), generator=gen).to(device)
    has_history = (torch.rand(b, 1, generator=gen) < cfg.history_prob).to(device)
    history = has_history & (torch.arange(t, device=device)[None] < split)
    ctx = torch.rand(b, t, generator=gen).to(device) * cfg.context_max
    return torch.where(history, ctx, levels), history | (levels <= cfg.context_max)


def save_dynamics(path, dit: DiT, meta: dict[str, Any]) -> None:
    save_checkpoint(path, DYNAMICS_KIND, {"dit": dit}, dict(meta, config=to_dict(dit.cfg), action_space=dit.action_space))


def read_dynamics(path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(metadata with ``config`` and ``action_space``, tensors) of a dynamics checkpoint, or of the DiT
    inside a world file."""
    try:
        return read_checkpoint(path, DYNAMICS_KIND, hint="python train.py stage=dynamics")
    except CheckpointError as e:
        try:
            meta, tensors = read_checkpoint(path, WORLD_KIND)
        except CheckpointError:
            raise e from None
        return {**meta, "config": meta["config"]["dit"]}, tensors


def vae_from_world(path, out) -> bool:
    """Fine-tuning a world file: write its VAE (with the latent statistics) as ``out``, the run's VAE.
    -> False when ``path`` is not a world file (a dynamics checkpoint holds no VAE)."""
    try:
        world = load_world(path)
    except CheckpointError:
        return False
    save_vae(out, world.vae, {"source": world.source, "latent_mean": world.latent_mean.tolist(),
                              "latent_std": world.latent_std.tolist(), "step": world.meta.get("vae_step"),
                              "psnr": world.meta.get("vae_psnr"), "from_world": str(path),
                              HISTORY: [e for e in history_of(world.meta) if e.get("stage") == "vae"]})
    return True


def load_dynamics(path, device="cpu") -> tuple[DiT, dict[str, Any]]:
    meta, tensors = read_dynamics(path)
    dit = DiT(DiTConfig.from_stored(meta["config"]), meta["action_space"])
    load_module(dit, tensors, "dit", path)
    return dit.to(device).eval(), meta


def init_weights(dit: DiT, path) -> list[str]:
    """Load a dynamics checkpoint's (or a world file's) weights into ``dit`` for fine-tuning -> the keys it kept fresh."""
    meta, tensors = read_dynamics(path)
    if meta["action_space"] != dit.action_space:
        raise ValueError(f"{path} was trained on action space {meta['action_space']}, this data has {dit.action_space}")
    # A reward head of another size (reward_space sign against symlog or raw): its last layer starts afresh.
    own = dit.state_dict()
    other = [k for k in own if k.startswith("reward_head.") and f"dit.{k}" in tensors
             and tensors[f"dit.{k}"].shape != own[k].shape]
    tensors = {k: v for k, v in tensors.items() if k[len("dit."):] not in other}
    return load_module(dit, tensors, "dit", path, allow_missing=True)


def train_dynamics(
    model_cfg: DiTConfig, cfg: DynamicsTrainConfig, sampler: SamplerConfig, data_dir, run_dir, device: torch.device,
    ranks: Ranks | None = None, budget: Budget = UNLIMITED,
) -> Path:
    """Train (or resume) the DiT on ``data_dir`` with the VAE of ``run_dir``; writes ``run_dir/dynamics.safetensors``."""
    if not 0 <= cfg.distill_rescale <= 1:
        raise ValueError(f"dynamics.train.distill_rescale is a share of guidance rescaling: 0 to 1, got {cfg.distill_rescale}")
    if cfg.rollout_frames:
        if not 1 <= cfg.rollout_frames <= cfg.clip_length - 2 or cfg.rollout_weight <= 0:
            raise ValueError(f"dynamics.train.rollout_frames is 1 to clip_length - 2 ({cfg.clip_length - 2}) with "
                             f"rollout_weight above 0, got {cfg.rollout_frames} and {cfg.rollout_weight}")
        if model_cfg.commit != "pass" or cfg.distill_guidance > 0:
            raise ValueError("dynamics.train.rollout_frames trains a two-call world (dynamics.model.commit=pass) by "
                             "flow matching: not with commit=draft or dynamics.train.distill_guidance")
    run_dir, ranks = Path(run_dir), ranks or Ranks()
    if cfg.init_from and not (run_dir / "vae.safetensors").exists():
        vae_from_world(cfg.init_from, run_dir / "vae.safetensors")
    vae, vae_meta = load_vae(run_dir / "vae.safetensors", device)
    if vae.cfg.temporal_factor != 1:
        raise ValueError("the dynamics model generates one latent per frame: train the VAE with temporal_factor=1")
    if (model_cfg.latent_channels, model_cfg.latent_size) != (vae.cfg.latent_channels, vae.cfg.latent_size):
        raise ValueError(f"dynamics latents ({model_cfg.latent_channels}, {model_cfg.latent_size}) must match the VAE's "
                         f"({vae.cfg.latent_channels}, {vae.cfg.latent_size})")
    encode = LatentEncoder(vae, vae_meta, device)
    data = EpisodeDataset(data_dir)
    store = None
    if cfg.pre_encode:
        vid = vae_file_id(run_dir / "vae.safetensors", vae_meta)
        if ranks.main:
            ensure_latents(data, encode, vae, vid)
        if ranks.world_size > 1:
            dist.barrier()
        store = LatentStore(data, vid)
    fields = ("actions", "rewards", "terminated", "truncated") if store is not None else None
    train = ClipDataset(data, cfg.clip_length, "train", heldout_every=cfg.heldout_every, fields=fields, latents=store)
    held = ClipDataset(data, cfg.clip_length, "heldout", stride=cfg.clip_length, heldout_every=cfg.heldout_every)
    torch.manual_seed(cfg.seed)
    if cfg.init_from and not model_cfg.latent_reward:  # a world's latent reward stays valid (the VAE is the same)
        model_cfg = replace(model_cfg, latent_reward=DiTConfig.from_stored(read_dynamics(cfg.init_from)[0]["config"]).latent_reward)
    dit = DiT(model_cfg, data.source["action_space"]).to(device)
    state_path, out_path, log_path = run_dir / "dynamics_state.safetensors", run_dir / "dynamics.safetensors", run_dir / "dynamics_log.jsonl"
    if cfg.init_from and not state_path.exists():  # before the EMA copies the weights
        fresh = init_weights(dit, cfg.init_from)
        if ranks.main:
            print(f"initialised from {cfg.init_from}" + (f" (new: {', '.join(fresh)})" if fresh else ""))
    if cfg.train_only not in ("all", "heads"):
        raise ValueError(f"dynamics.train.train_only must be all or heads, got {cfg.train_only!r}")
    if cfg.train_only == "heads":
        if not cfg.init_from and not state_path.exists():
            raise ValueError("dynamics.train.train_only=heads trains the heads of a trained network: give "
                             "dynamics.train.init_from=WORLD_OR_DYNAMICS_FILE")
        dit.requires_grad_(False)
        for head in dit.head_modules():
            head.requires_grad_(True)
    ema = EMA(dit, cfg.ema_decay).to(device)
    opt = torch.optim.AdamW([p for p in dit.parameters() if p.requires_grad], lr=cfg.lr, betas=(0.9, 0.95),
                            weight_decay=cfg.weight_decay)
    step = 0
    if state_path.exists():
        step, saved_meta, _ = load_state(state_path, {"dit": dit, "ema": ema}, opt, to_dict(model_cfg))
        prior = history_of(saved_meta)
        if ranks.main:
            print(f"resumed from {state_path} at step {step}")
    else:
        prior = history_of(read_dynamics(cfg.init_from)[0]) if cfg.init_from else []
    hist = RunHistory("dynamics", run_dir, prior, step, cfg.batch_size * cfg.clip_length * ranks.world_size, device,
                      init_from=cfg.init_from, distill_guidance=cfg.distill_guidance or None,
                      distill_steps=cfg.distill_steps if cfg.distill_guidance > 0 and cfg.distill_steps != 1 else None,
                      teacher=cfg.teacher if cfg.distill_guidance > 0 or cfg.anchor_weight > 0 else None,
                      anchor_weight=cfg.anchor_weight or None,
                      anchor_guidance=cfg.anchor_guidance if cfg.anchor_weight > 0 else None,
                      distill_rescale=cfg.distill_rescale or None, rollout_frames=cfg.rollout_frames or None,
                      rollout_weight=cfg.rollout_weight if cfg.rollout_frames else None,
                      anchor_actions=list(cfg.anchor_actions) if cfg.anchor_weight > 0 and cfg.anchor_actions else None,
                      anchor_agent_data=False if cfg.anchor_weight > 0 and not cfg.anchor_agent_data else None,
                      reward_negative_weight=None if cfg.reward_negative_weight == 1 else cfg.reward_negative_weight,
                      train_only=None if cfg.train_only == "all" else cfg.train_only)

    def evaluate_now(step: int) -> tuple[dict[str, Any], dict[str, Any]]:
        stats = evaluate(ema.shadow, encode, held, cfg, sampler, device, run_dir / f"sample-{step:07d}.mp4", data.source)
        return stats, stats

    def checkpoint(step: int, stats: dict[str, Any]) -> None:
        history = hist.entries(step, finished=step >= cfg.steps)
        save_state(state_path, step, {"dit": dit, "ema": ema}, opt, {"config": to_dict(model_cfg), "train": to_dict(cfg),
                                                                    HISTORY: history})
        save_dynamics(out_path, ema.shadow, {"step": step, "source": data.source, "sampler": to_dict(sampler), **stats,
                                             HISTORY: history})

    amp = autocast_dtype(device, cfg.precision)
    teacher, teacher_start = None, sampler.start_level
    if cfg.reward_negative_weight <= 0:
        raise ValueError(f"dynamics.train.reward_negative_weight must be > 0, got {cfg.reward_negative_weight}")
    if cfg.anchor_weight < 0:
        raise ValueError(f"dynamics.train.anchor_weight must be >= 0, got {cfg.anchor_weight}")
    if cfg.anchor_weight > 0 and cfg.distill_guidance > 0:
        raise ValueError("dynamics.train.anchor_weight anchors a flow-matching fine-tune; set it to 0 with "
                         "dynamics.train.distill_guidance (that loss is all teacher already)")
    if cfg.anchor_weight > 0 and cfg.anchor_actions and model_cfg.commit == "draft":
        raise ValueError("dynamics.train.anchor_actions holds a two-call world's branches; a commit=draft world is "
                         "anchored on every frame: leave anchor_actions unset (null)")
    check_steps(cfg.distill_steps, "dynamics.train.distill_steps")
    if cfg.distill_steps > 1 and cfg.distill_guidance <= 0:
        raise ValueError("dynamics.train.distill_steps distils a teacher's sampler: set dynamics.train.distill_guidance "
                         "too (1 keeps the teacher's own key response)")
    if cfg.distill_guidance > 0 or cfg.anchor_weight > 0:
        source = cfg.teacher or cfg.init_from
        if not source:
            what = "distill_guidance" if cfg.distill_guidance > 0 else "anchor_weight"
            raise ValueError(f"dynamics.train.{what} needs dynamics.train.init_from (or dynamics.train.teacher): "
                             "the model whose guided predictions are distilled (a dynamics checkpoint or a world file)")
        teacher, teacher_meta = load_dynamics(source, device)
        teacher.requires_grad_(False)
        # A two-call teacher of a one-call student plays each frame from its own sampler's start level.
        teacher_start = float((teacher_meta.get("sampler") or {}).get("start_level", sampler.start_level))
        if cfg.distill_steps > 1 and teacher.cfg.commit == "draft":
            raise ValueError(f"dynamics.train.distill_steps needs a two-call teacher (commit=pass): {source} makes "
                             "each frame in one call, so it has no steps to distil; leave distill_steps at 1")
        if not distillable(teacher.cfg, model_cfg):
            raise ValueError(f"guidance distillation keeps the architecture (a two-call teacher may teach a one-call "
                             f"world, not the reverse): {source} has {to_dict(teacher.cfg)}, the config asks for "
                             f"{to_dict(model_cfg)}")
    # Each rank draws its own batches and levels (with replacement, so no sampler needs sharding).
    gen = torch.Generator()  # reseeded every step by the loop
    if cfg.agent_data_weight < 0:
        raise ValueError(f"dynamics.train.agent_data_weight must be >= 0, got {cfg.agent_data_weight}")
    if cfg.terminal_weight <= 0:
        raise ValueError(f"dynamics.train.terminal_weight must be above 0, got {cfg.terminal_weight}")
    weights = None if cfg.agent_data_weight == 1.0 else train.policy_weights({"agent": cfg.agent_data_weight})
    if cfg.terminal_weight != 1.0:
        ends = train.terminal_weights(cfg.terminal_weight)
        weights = ends if weights is None else weights * ends
    loader = DataLoader(train, batch_sampler=StepBatches(len(train), cfg.batch_size, cfg.seed, step, ranks.rank,
                                                         weights), num_workers=cfg.loader_workers)

    def loss_fn(net, batch):
        z = latents_of(batch, encode, device) if cfg.rollout_frames else None
        if teacher is not None and cfg.anchor_weight > 0:
            loss, parts = anchored_clip_loss(net, teacher, encode, batch, cfg, sampler, gen, device, amp, teacher_start,
                                             z0=z)
        elif teacher is not None:
            loss, parts = distill_clip_loss(net, teacher, encode, batch, cfg, sampler, gen, device, amp, teacher_start)
        else:
            loss, parts = (draft_clip_loss if model_cfg.commit == "draft" else clip_loss)(net, encode, batch, cfg, gen,
                                                                                         device, amp, z0=z)
        if cfg.rollout_frames:
            own = rollout_loss(net, z, batch["actions"].to(device), reset_null(batch["start"], z.shape[1], device),
                               cfg, sampler, gen, amp)
            loss = loss + cfg.rollout_weight * own
            parts = {**parts, "loss": loss.detach(), "rollout": own.detach()}
        return loss, {k: v.item() for k, v in parts.items()}, cfg.batch_size * cfg.clip_length

    if ranks.main:
        print(f"DiT: {sum(p.numel() for p in dit.parameters()) / 1e6:.2f}M params, {model_cfg.tokens_per_frame} tokens/frame, "
              f"{len(train)} train clips, {len(held)} held-out clips, device {device}, autocast {amp}, processes {ranks.world_size}")
    run_training(dit, ema, opt, cfg, step, iter(loader), loss_fn, evaluate_now, checkpoint, log_path, state_path, ranks,
                 generator=gen, budget=budget, what="dynamics")
    return out_path


def latents_of(batch, encode, device) -> torch.Tensor:
    """A batch's normalised latents (B, T, C, h, w): pre-encoded ones, or its frames through the encoder."""
    return batch["latents"].to(device) if "latents" in batch else encode(batch["frames"])


@torch.no_grad()
def latent_motion(z: torch.Tensor, threshold: float) -> torch.Tensor:
    """How much each latent position changes from the previous frame (largest channel change over ``threshold``,
    clipped to [0, 1]; a clip's first frame counts its change to the second). z (B, T, C, h, w) -> (B, T, 1, h, w)."""
    if z.shape[1] < 2:
        return torch.zeros_like(z[:, :, :1])
    change = (z[:, 1:] - z[:, :-1]).abs().amax(dim=2, keepdim=True)
    return (torch.cat([change[:, :1], change], 1) / threshold).clamp(0, 1)


def clip_loss(dit, encode, batch, cfg, gen, device, amp=None, z0=None):
    """Flow matching with per-frame levels on a batch of clips; ``z0``: its latents (B, T, C, h, w), when the
    caller has them already."""
    z0 = latents_of(batch, encode, device) if z0 is None else z0
    b, t = z0.shape[:2]
    actions = batch["actions"].to(device)
    levels, head_mask = clip_levels(b, t, cfg, gen, device)
    noise = torch.randn(z0.shape, generator=gen).to(device)
    null = (torch.rand(b, t, generator=gen) < cfg.null_action_prob).to(device)
    null[:, 0] |= batch["start"].to(device) == 0  # nothing led to a reset frame
    with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
        v, reward, done = dit(add_noise(z0, levels, noise), levels, actions, null)
    if cfg.motion_weight > 0:
        w = 1 + cfg.motion_weight * latent_motion(z0, cfg.motion_threshold)
        flow = (w * (v.float() - velocity(z0, noise)) ** 2).mean()
    else:
        flow = F.mse_loss(v.float(), velocity(z0, noise))
    r_loss, d_loss = head_losses(reward, done, batch, head_mask.float(), device, _reward_space(dit),
                                  cfg.reward_negative_weight)
    loss = flow + cfg.reward_weight * r_loss + cfg.done_weight * d_loss
    return loss, {"loss": loss.detach(), "flow": flow.detach(), "reward_loss": r_loss.detach(), "done_loss": d_loss.detach()}


def reset_null(start: torch.Tensor, t: int, device) -> torch.Tensor:
    """The null-action mask (B, t) of clips starting at ``start`` (B,) in their episodes: only a reset frame's
    action is null (nothing led to it)."""
    null = torch.zeros(len(start), t, dtype=torch.bool, device=device)
    null[:, 0] = start.to(device) == 0
    return null


def anchored_clip_loss(dit, teacher, encode, batch, cfg, sampler, gen, device, amp=None, teacher_start=None, z0=None):
    """Anchored fine-tuning (``anchor_weight``): the clips' flow-matching loss (:func:`clip_loss`, a one-call
    world's :func:`draft_clip_loss`) plus ``anchor_weight`` times the distillation loss of the same clips (the
    driver's only, without ``anchor_agent_data``; weighted by their share of the batch) against the frozen
    ``teacher`` at scale ``anchor_guidance`` (a one-call world's on its draft layout, a two-call teacher playing
    from ``teacher_start``); the heads learn from the clips' frames in the first part only. ``z0``: the batch's
    latents, when the caller has them."""
    z = latents_of(batch, encode, device) if z0 is None else z0
    draft = getattr(dit, "module", dit).cfg.commit == "draft"
    loss, parts = (draft_clip_loss if draft else clip_loss)(dit, encode, batch, cfg, gen, device, amp, z0=z)
    keep = torch.ones(len(z), dtype=torch.bool) if cfg.anchor_agent_data else ~batch["agent"]
    if not keep.any():  # a batch of the agent's clips only
        return loss, {**parts, "anchor": torch.zeros(())}
    z0 = z[keep.to(z.device)]
    null = reset_null(batch["start"][keep], z0.shape[1], device)
    actions = batch["actions"][keep].to(device)
    if draft:
        anchor = draft_distill_loss(dit, teacher, z0, actions, null,
                                    replace(cfg, distill_guidance=cfg.anchor_guidance, distill_steps=1), gen, amp,
                                    teacher_start)[0]
    else:
        anchor = distill_loss(dit, teacher, z0, actions, null, cfg, sampler.start_level, gen, amp,
                              scale=cfg.anchor_guidance, only_actions=cfg.anchor_actions, steps=1)[0]
    loss = loss + cfg.anchor_weight * anchor * keep.float().mean().item()
    return loss, {**parts, "loss": loss.detach(), "anchor": anchor.detach()}


def draft_clip_loss(dit, encode, batch, cfg, gen, device, amp=None, z0=None):
    """``commit=draft`` training: every frame's input is its previous frame noised to the model's draft level
    (the clip's first frame: itself), as the engine's one call per frame gives it, and from it the model
    predicts the frame in one step (input - level * velocity), every frame after the first a target;
    reward and termination at every frame. ``z0``: the batch's latents (B, T, C, h, w), when the caller has them."""
    z0 = latents_of(batch, encode, device) if z0 is None else z0
    b, t = z0.shape[:2]
    level = getattr(dit, "module", dit).cfg.draft_level
    actions = batch["actions"].to(device)
    noise = torch.randn(z0.shape, generator=gen).to(device)
    null = (torch.rand(b, t, generator=gen) < cfg.null_action_prob).to(device)
    null[:, 0] |= batch["start"].to(device) == 0  # nothing led to a reset frame
    x, levels = draft_inputs(z0, level, noise)
    with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
        v, reward, done = dit(x, levels, actions, null)
    err = (v.float() - (x - z0) / level)[:, 1:] ** 2  # the first frame has no previous one to draft from
    if cfg.motion_weight > 0:
        err = err * (1 + cfg.motion_weight * latent_motion(z0, cfg.motion_threshold)[:, 1:])
    flow = err.mean()
    r_loss, d_loss = head_losses(reward, done, batch, torch.ones(b, t, device=device), device, _reward_space(dit),
                                  cfg.reward_negative_weight)
    loss = flow + cfg.reward_weight * r_loss + cfg.done_weight * d_loss
    return loss, {"loss": loss.detach(), "flow": flow.detach(), "reward_loss": r_loss.detach(), "done_loss": d_loss.detach()}


def _reward_space(net) -> str:
    """The reward space of a DiT, also when DistributedDataParallel wraps it."""
    return getattr(net, "module", net).cfg.reward_space


def head_losses(reward, done, batch, w, device, space: str = "symlog",
                negative_weight: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Reward (MSE in ``space``: symlog or raw; ``sign``: cross-entropy of the (B, T, 3) logits against the reward's
    sign) and termination (BCE) losses of (B, T) predictions, weighted per frame by w (B, T); the reward loss of
    frames with a negative reward by ``negative_weight`` times more."""
    denom = w.sum().clamp_min(1.0)
    target = batch["rewards"].to(device).float()
    rw = w * torch.where(target < 0, float(negative_weight), 1.0)
    if space == "sign":
        cls = (torch.sign(target) + 1).long()
        r_loss = (F.cross_entropy(reward.float().flatten(0, 1), cls.flatten(), reduction="none") * rw.flatten()).sum() / denom
    else:
        r_loss = ((reward.float() - (symlog(target) if space == "symlog" else target)) ** 2 * rw).sum() / denom
    d_loss = (F.binary_cross_entropy_with_logits(done.float(), batch["terminated"].to(device).float(), reduction="none") * w).sum() / denom
    return r_loss, d_loss


def distill_clip_loss(dit, teacher, encode, batch, cfg, sampler, gen, device, amp, teacher_start: float):
    """Guidance distillation on one batch of clips (guidance_distill.py); the clip's own frames train the heads.
    ``teacher_start``: the start level a two-call teacher of a one-call student plays from."""
    z0 = latents_of(batch, encode, device)
    null = reset_null(batch["start"], z0.shape[1], device)
    if getattr(dit, "module", dit).cfg.commit == "draft":
        guided, reward, done = draft_distill_loss(dit, teacher, z0, batch["actions"].to(device), null, cfg, gen, amp,
                                                  teacher_start)
    else:
        guided, reward, done = distill_loss(dit, teacher, z0, batch["actions"].to(device), null, cfg,
                                            sampler.start_level, gen, amp)
    r_loss, d_loss = head_losses(reward, done, batch, torch.ones_like(reward, dtype=torch.float32), device,
                                 _reward_space(dit), cfg.reward_negative_weight)
    loss = guided + cfg.reward_weight * r_loss + cfg.done_weight * d_loss
    return loss, {"loss": loss.detach(), "guided": guided.detach(), "reward_loss": r_loss.detach(), "done_loss": d_loss.detach()}


@torch.no_grad()
def evaluate(dit, encode, held, cfg, sampler, device, video_path, source) -> dict[str, float]:
    """Held-out losses at a fixed seed, and a sample rollout (real | generated) written as mp4."""
    import numpy as np

    from worldsim.frames import psnr
    from worldsim.video import write_mp4

    dit.eval()
    gen = torch.Generator().manual_seed(1234)
    n = min(8, len(held))
    idx = torch.linspace(0, len(held) - 1, n).long().tolist()
    batch = {k: torch.stack([held[i][k] for i in idx]) for k in held[0]}
    _, parts = (draft_clip_loss if dit.cfg.commit == "draft" else clip_loss)(dit, encode, batch, cfg, gen, device)
    out = {f"heldout_{k}": v.item() for k, v in parts.items()}
    # Rollout: a real context of half a clip, then the real actions, open loop.
    ctx_len = max(1, cfg.clip_length // 2)
    ep_clip = held[idx[0]]
    real, acts = ep_clip["frames"].numpy(), ep_clip["actions"]
    sim = Simulator(dit, encode.vae, 1, sampler, encode.norm.mean, encode.norm.std, seed=0)
    if ctx_len < len(real):
        gen_frames = sim.rollout(real[None, :ctx_len], acts[None, :ctx_len], acts[None, ctx_len:])[0]
        out["rollout_psnr"] = psnr(to_model(gen_frames), to_model(real[ctx_len:])).item()
        write_mp4(video_path, np.concatenate([real[ctx_len:], gen_frames], axis=2), source.get("fps", 30), scale=4)
    dit.train()
    return out
