"""Training loop of the causal VAE: EMA, bf16 autocast where available, held-out PSNR, resume."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from worldsim.checkpoint import load_module, read_checkpoint
from worldsim.config import to_dict
from worldsim.data.dataset import ClipDataset, EpisodeDataset
from worldsim.frames import psnr, to_model
from worldsim.models.vae import CausalVAE, VAEConfig, kl_divergence, save_vae
from worldsim.training.adversarial import PatchCritic, adaptive_weight, consecutive_pairs, critic_loss, decoder_loss
from worldsim.training.budget import UNLIMITED, Budget
from worldsim.training.ema import EMA
from worldsim.training.history import HISTORY, RunHistory, history_of
from worldsim.training.loop import Ranks, StepBatches, autocast_dtype, run_training
from worldsim.training.state import load_state, save_state


@dataclass
class VAETrainConfig:
    """Optimisation of the VAE (``vae_train.*`` overrides)."""

    steps: int = 20_000
    """Total optimiser steps (a resumed run continues up to this)."""
    batch_size: int = 12
    """Clips per step."""
    clip_length: int = 3
    """Frames per clip; with temporal_factor k it must be 1 + k*n."""
    lr: float = 1e-3
    """Peak AdamW learning rate (linear warm-up, cosine decay to 10%)."""
    warmup: int = 200
    """Warm-up steps."""
    kl_weight: float = 1e-6
    """Weight of the KL term; small, so latents stay informative."""
    l1_weight: float = 0.2
    """Weight of an L1 term next to the MSE."""
    motion_weight: float = 0.0
    """Extra loss weight on moving pixels (those off their clip's per-pixel temporal median; ``motion_mask``):
    a pixel that moves counts ``1 + motion_weight`` times. Small moving objects (Pong's one-pixel ball) are
    nothing in a frame's mean error and vanish without it; 0 weights every pixel alike."""
    motion_threshold: float = 0.1
    """Distance from the median (model units, [-1, 1]) at which a pixel counts fully as moving."""
    grad_clip: float = 1.0
    """Gradient-norm clipping."""
    ema_decay: float = 0.999
    """EMA decay of the exported weights."""
    eval_every: int = 250
    """Steps between held-out PSNR evaluations (and checkpoints)."""
    eval_clips: int = 64
    """Held-out clips per evaluation."""
    log_every: int = 50
    """Steps between log lines."""
    loader_workers: int = 0
    """DataLoader worker processes (0 reads in the training process)."""
    heldout_every: int = 10
    """Every n-th episode (by global index) is held out."""
    precision: str = "auto"
    """``auto`` (bf16 autocast on GPUs that have it, else fp32), ``bf16`` or ``fp32``."""
    seed: int = 0
    """Seed of initialisation and data order."""
    init_from: str | None = None
    """Fine-tune: start from this VAE file's (or world file's) weights, in a fresh run; the architecture must be
    the same. E.g. a world recorded at another frame skip, whose causal convolutions see other motion."""
    decoder_only: bool = False
    """Train the decoder alone (with ``init_from``): the encoder, and so every latent a world's DiT and an agent
    read, stay bit for bit; the decoder learns from the posterior means, as it decodes at play time. A world
    file takes the new decoder with ``python -m worldsim.new_decoder``."""
    edge_weight: float = 0.0
    """Weight of an L1 term between the Laplacians of the reconstruction and of the frame (per colour channel):
    the fine detail (kerbs, grass texture, thin limbs) that a mean error leaves blurred. 0 leaves it out."""
    adversarial_weight: float = 0.0
    """Weight of the adversarial term (:mod:`worldsim.training.adversarial`: a patch critic of consecutive frame
    pairs, hinge loss, the term scaled adaptively to the pixel loss at the decoder's last layer); 0.5 is the usual
    size. 0 leaves it out."""
    adversarial_start: int = 0
    """Step from which the decoder gets the adversarial term; the critic learns from the run's first step (or
    from its resumption), so a start some hundred steps later lets a fresh critic learn first."""
    critic_lr: float = 2e-4
    """Learning rate of the critic (Adam, betas 0.5 / 0.9, constant)."""
    latent_noise: float = 0.0
    """With ``decoder_only``: Gaussian noise added to the latents, as a fraction of each channel's spread, so the
    decoder also draws crisp frames from the slightly-off latents a world generates. 0 decodes them clean."""


def init_history(path) -> list:
    """The VAE entries of a VAE file's or a world file's history (what a run continued from it inherits)."""
    from worldsim.checkpoint import CheckpointError

    for kind in ("vae", "world"):
        try:
            return [e for e in history_of(read_checkpoint(path, kind)[0]) if e.get("stage") == "vae"]
        except CheckpointError:
            continue
    return []


def init_vae(vae: CausalVAE, path) -> None:
    """Load a VAE file's or a world file's VAE weights into ``vae`` (same config, every tensor)."""
    from worldsim.checkpoint import CheckpointError
    from worldsim.models.vae import load_vae
    from worldsim.world import load_world

    try:
        other, _ = load_vae(path)
    except CheckpointError as e:
        try:
            other = load_world(path).vae
        except CheckpointError:
            raise e from None
    if to_dict(other.cfg) != to_dict(vae.cfg):
        raise ValueError(f"{path} holds a VAE of another architecture ({to_dict(other.cfg)}) than vae.model "
                         f"({to_dict(vae.cfg)}); set vae.model to match it, or train without vae.train.init_from")
    vae.load_state_dict(other.state_dict())


@torch.no_grad()
def motion_mask(x: torch.Tensor, threshold: float) -> torch.Tensor:
    """How much each pixel moves: its largest channel distance from the clip's per-pixel temporal median, over
    ``threshold``, clipped to [0, 1]. x (B, L, 3, H, W) in [-1, 1] -> (B, L, 1, H, W)."""
    median = x.median(dim=1, keepdim=True).values
    return ((x - median).abs().amax(dim=2, keepdim=True) / threshold).clamp(0, 1)


def laplacian(x: torch.Tensor) -> torch.Tensor:
    """The 4-neighbour Laplacian of each colour channel of each frame: x (B, L, 3, H, W) -> (B, L, 3, H-2, W-2)."""
    return (x[..., :-2, 1:-1] + x[..., 2:, 1:-1] + x[..., 1:-1, :-2] + x[..., 1:-1, 2:] - 4 * x[..., 1:-1, 1:-1])


def evaluate(vae: CausalVAE, clips: ClipDataset, n: int, device: torch.device, batch: int = 16) -> dict[str, Any]:
    """Held-out reconstruction PSNR (posterior means), the PSNR over moving pixels only (``motion_mask`` over
    0.5 at the default threshold: what a frame's mean hides, e.g. a small ball) and per-channel latent statistics."""
    idx = torch.linspace(0, len(clips) - 1, min(n, len(clips))).long().tolist()
    psnrs, lat, moving_se, moving_n = [], [], 0.0, 0
    for i in range(0, len(idx), batch):
        frames = torch.stack([clips[j]["frames"] for j in idx[i : i + batch]])
        x = to_model(frames, device)
        z = vae.encode(x)
        recon = vae.decode(z).clamp(-1, 1)
        psnrs.append(psnr(recon, x).item() * len(frames))
        moving = (motion_mask(x, 0.1) > 0.5).expand_as(x)
        moving_se += float(((recon - x)[moving] ** 2).sum())
        moving_n += int(moving.sum())
        lat.append(z.transpose(1, 2).flatten(2).transpose(0, 1).flatten(1))  # (C, N)
    z = torch.cat(lat, 1)
    moving_psnr = 10 * math.log10(4 / max(moving_se / moving_n, 1e-10)) if moving_n else None
    return {"psnr": sum(psnrs) / len(idx), "moving_psnr": moving_psnr, "latent_mean": z.mean(1).tolist(),
            "latent_std": z.std(1).tolist()}


def train_vae(
    model_cfg: VAEConfig, cfg: VAETrainConfig, data_dir: str | Path, run_dir: str | Path, device: torch.device,
    source: dict | None = None, ranks: Ranks | None = None, budget: Budget = UNLIMITED,
) -> Path:
    """Train (or resume) a VAE on the clips of ``data_dir``; writes ``run_dir/vae.safetensors``."""
    if cfg.decoder_only and not cfg.init_from:
        raise ValueError("vae.train.decoder_only=true trains a decoder for an existing encoder: give the VAE or "
                         "world file it belongs to as vae.train.init_from")
    if cfg.latent_noise and not cfg.decoder_only:
        raise ValueError("vae.train.latent_noise applies to decoder-only training (vae.train.decoder_only=true)")
    run_dir, ranks = Path(run_dir), ranks or Ranks()
    if ranks.world_size > 1 and (cfg.decoder_only or cfg.adversarial_weight > 0):
        raise ValueError("vae.train.decoder_only and vae.train.adversarial_weight train in one process (their "
                         "passes and the critic are not synchronised across processes): run without torchrun")
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    data = EpisodeDataset(data_dir)
    train = ClipDataset(data, cfg.clip_length, "train", heldout_every=cfg.heldout_every, fields=("frames",))
    held = ClipDataset(data, cfg.clip_length, "heldout", stride=cfg.clip_length, heldout_every=cfg.heldout_every, fields=("frames",))
    if data.source.get("frame_size", model_cfg.image_size) != model_cfg.image_size:
        raise ValueError(f"{data_dir} has {data.source['frame_size']} px frames but vae.image_size={model_cfg.image_size}")

    vae = CausalVAE(model_cfg).to(device)
    state_path, out_path, log_path = run_dir / "vae_state.safetensors", run_dir / "vae.safetensors", run_dir / "vae_log.jsonl"
    if cfg.init_from and not state_path.exists():  # before the EMA copies the weights
        init_vae(vae, cfg.init_from)
        if ranks.main:
            print(f"initialised from {cfg.init_from}")
    if cfg.decoder_only:
        vae.encoder.requires_grad_(False)
    ema = EMA(vae, cfg.ema_decay).to(device)
    trained = vae.decoder if cfg.decoder_only else vae
    opt = torch.optim.AdamW(trained.parameters(), lr=cfg.lr, betas=(0.9, 0.99), weight_decay=0.0)
    critic = PatchCritic().to(device) if cfg.adversarial_weight > 0 else None
    critic_opt = torch.optim.Adam(critic.parameters(), lr=cfg.critic_lr, betas=(0.5, 0.9)) if critic else None
    step = 0
    if state_path.exists():  # the architecture must match; training options may change (e.g. more steps)
        step, saved_meta, saved = load_state(state_path, {"vae": vae, "ema": ema}, opt, to_dict(model_cfg))
        if critic is not None:
            if any(k.startswith("critic.") for k in saved):
                load_module(critic, saved, "critic", state_path)
            elif ranks.main:
                print(f"the adversarial term is new to this run: a fresh critic from step {step}")
        prior = history_of(saved_meta)
        if ranks.main:
            print(f"resumed from {state_path} at step {step}")
    else:
        prior = init_history(cfg.init_from) if cfg.init_from else []
    hist = RunHistory("vae", run_dir, prior, step, cfg.batch_size * cfg.clip_length * ranks.world_size, device,
                      init_from=cfg.init_from, **({"decoder_only": True} if cfg.decoder_only else {}))
    meta = {"source": source or data.source}

    def evaluate_now(step: int) -> tuple[dict[str, Any], dict[str, Any]]:
        stats = evaluate(ema.shadow, held, cfg.eval_clips, device)
        return stats, {"heldout_psnr": stats["psnr"], "heldout_moving_psnr": stats["moving_psnr"]}

    def checkpoint(step: int, stats: dict[str, Any]) -> None:
        # The resumable state first (fast); then the weights, whose latent statistics need an evaluation.
        history = hist.entries(step, finished=step >= cfg.steps)
        modules = {"vae": vae, "ema": ema, **({"critic": critic} if critic else {})}
        save_state(state_path, step, modules, opt, {"config": to_dict(model_cfg), "train": to_dict(cfg), HISTORY: history})
        stats = stats or evaluate_now(step)[0]
        save_vae(out_path, ema.shadow, dict(meta, step=step, **stats, **{HISTORY: history}))

    amp = autocast_dtype(device, cfg.precision)
    calls = [step]  # the step each loss_fn call trains

    def adversarial(recon: torch.Tensor, x: torch.Tensor, err: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """One critic step on these frames, then the decoder's adaptively weighted term (from adversarial_start)."""
        real, fake = consecutive_pairs(x), consecutive_pairs(recon)
        critic.requires_grad_(True)
        c_loss = critic_loss(critic(real), critic(fake.detach()))
        critic_opt.zero_grad(set_to_none=True)
        c_loss.backward()
        critic_opt.step()
        parts = {"critic_loss": c_loss.item()}
        if calls[0] < cfg.adversarial_start:
            return err, parts
        critic.requires_grad_(False)  # the decoder's term flows through the critic, not into it
        g = decoder_loss(critic(fake))
        w = adaptive_weight(err, g, vae.decoder.conv_out.conv.weight, cfg.adversarial_weight)
        return err + w * g, dict(parts, adversarial=g.item(), adversarial_scale=w.item())

    def loss_fn(net, batch):
        x = to_model(batch["frames"], device)  # (B, L, 3, H, W)
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            if cfg.decoder_only:
                with torch.no_grad():
                    mean = net.encode(x)
                    if cfg.latent_noise > 0:
                        spread = mean.float().std(dim=(0, 1, 3, 4), keepdim=True)
                        mean = mean + cfg.latent_noise * spread * torch.randn_like(mean.float())
                recon = net.decode(mean)
            else:
                recon, mean, logvar = net(x)
        recon = recon.float()
        mse = F.mse_loss(recon, x)
        if cfg.motion_weight > 0:
            w = 1 + cfg.motion_weight * motion_mask(x, cfg.motion_threshold)
            err = (w * ((recon - x) ** 2 + cfg.l1_weight * (recon - x).abs())).mean()
        else:
            err = mse + cfg.l1_weight * F.l1_loss(recon, x)
        if cfg.edge_weight > 0:
            err = err + cfg.edge_weight * F.l1_loss(laplacian(recon), laplacian(x))
        parts: dict[str, float] = {}
        if critic is not None:
            err, parts = adversarial(recon, x, err)
        calls[0] += 1
        loss = err if cfg.decoder_only else err + cfg.kl_weight * kl_divergence(mean.float(), logvar.float())
        parts.update(loss=loss.item(), train_psnr=10 * math.log10(4 / max(mse.item(), 1e-10)))
        return loss, parts, x.shape[0] * x.shape[1]

    loader = DataLoader(
        train, batch_sampler=StepBatches(len(train), cfg.batch_size, cfg.seed, step, ranks.rank),
        num_workers=cfg.loader_workers, persistent_workers=cfg.loader_workers > 0,
    )
    if ranks.main:
        print(f"VAE: {sum(p.numel() for p in vae.parameters()) / 1e6:.2f}M params, {len(train)} train clips, "
              f"{len(held)} held-out clips, device {device}, autocast {amp}, processes {ranks.world_size}")
    run_training(vae, ema, opt, cfg, step, iter(loader), loss_fn, evaluate_now, checkpoint, log_path, state_path, ranks,
                 budget=budget, what="vae")
    return out_path
