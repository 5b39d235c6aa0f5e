"""The loop's settings (``loop.*``)."""

from __future__ import annotations

from dataclasses import dataclass

PHASES = ("play", "world", "agent", "score")
"""A round's phases, in order; each leaves ``<phase>.json`` when finished (worldsim/training/rounds.py). With
``select_episodes`` a ``select`` phase runs between agent and score (``select.json``)."""


@dataclass
class LoopConfig:
    """Rounds of: (a) the agent plays the real game and its episodes join the data, (b) the world is fine-tuned
    on all the data with the agent's episodes weighted in, (c) the agent continues training in that world,
    (d) the agent is scored in the real game on held-out seeds. The defaults fit a 2-core CPU."""

    rounds: int = 3
    """Rounds in all (a later run with more rounds continues after the last finished one)."""
    world: str | None = None
    """The world round 1 starts from (default: ``checkpoint``, else the shipped world of ``world.name``)."""
    agent: str | None = None
    """The agent round 1 starts from (None: round 1 trains one from scratch and plays no real frames)."""
    round_minutes: float | None = None
    """Each round's wall-clock budget (None: none); the world gets ``world_share`` of it, the agent
    ``agent_share``, real play and scoring the rest. A phase stopped by its share counts as done."""
    world_share: float = 0.45
    agent_share: float = 0.4
    play_frames: int = 20_000
    """Real frames the agent plays per round for the data (whole episodes, until at least this many)."""
    play_seed: int = 600_000_000
    """First seed of the data episodes; round k's continue after round k-1's (never the scoring seeds)."""
    explore: float = 0.05
    """Chance per decision of a uniformly random action while playing for data."""
    sample: bool = True
    """Sample the agent's actions from its policy while playing for data (False: its most likely action)."""
    world_from: str = "previous"
    """Where each round's world fine-tune starts: ``previous`` (the last round's world: the fine-tunes accumulate)
    or ``start`` (the world the loop started from, every round: one fine-tune away from it on all the data so far,
    so that no round inherits an earlier round's drift; CarRacing's round-4 world, four fine-tunes on, had an
    inverse-dynamics ratio of 0.68 against its start's 0.96)."""
    world_steps: int = 400
    """Optimiser steps of the world's fine-tune per round (``dynamics.train`` settings otherwise)."""
    world_lr: float = 1e-4
    world_warmup: int = 20
    world_ema_decay: float = 0.99
    """EMA decay of the fine-tune's exported weights: short enough for a few hundred steps to show (at the
    trainer's default 0.999, 400 steps would leave two thirds of the previous world in the export)."""
    agent_data_weight: float = 4.0
    """``dynamics.train.agent_data_weight`` of the fine-tune: clips of the agent's episodes drawn this many times
    as often as the driver's."""
    terminal_weight: float = 50.0
    """``dynamics.train.terminal_weight`` of the fine-tune (and the heads' refit): the clip that ends on an
    episode's terminal frame drawn this many times as often. The agent's episodes are where the game ends early
    (the car leaves the map: -100), a few dozen clips among ~100k; CarRacing's done head, fine-tuned without this,
    logged a termination loss of 0.0 (it never saw one). At 50 over ~280 steps it moved (the probability at the
    terminal frame 1e-19 -> 1e-9) but not to 0.5: pair it with ``head_steps``."""
    guidance_steps: int = 0
    """After the fine-tune (before the heads), this many steps of guidance distillation of the fine-tuned world into
    itself at ``guidance_scale`` (``dynamics.train.distill_guidance``; 0: none), the agent's episodes drawn
    ``agent_data_weight`` times as often. The fine-tune learns from the data by plain flow matching, which undoes
    part of a key response that guidance distillation had put in the weights: Boxing's ``boxing-gd`` lost 0.98 ->
    0.93 of the game's key response in a 400-step round, and the shipped world's key test failed on it. It
    strengthens all an action does, though: that round's world distilled at 1.5 passed the key test but paid the
    round's agent 77.6 a bout where the game paid 47.5 (without it: 45.6); see checkpoints/wip/README.md. The other
    way: ``dynamics.train.anchor_weight`` holds the fine-tune itself near the world it starts from."""
    guidance_scale: float = 1.5
    guidance_share: float = 0.15
    """The guidance step's share of the round's minutes (on top of ``world_share``; with ``guidance_steps``)."""
    head_steps: int = 0
    """After the fine-tune, this many steps that train only the reward and termination heads on the fine-tuned
    (frozen) world, at ``head_lr`` with the agent's episodes drawn ``head_agent_weight`` times as often (0: none).
    The heads are where an agent's world is most wrong (it pays for states the game punishes), and a few hundred
    all-weight steps at ``world_lr`` hardly move them; the frames stay exactly the fine-tune's."""
    head_lr: float = 1e-3
    head_reward_space: str | None = None
    """The reward space the heads refit switches the world to (``sign``: three classes, DIAMOND's reward for
    Atari; worldsim/models/dit.py ``reward_space``); None keeps the world's."""
    head_pool: str | None = None
    """How the refitted heads read a frame's tokens (``mean`` or ``attention``: learned queries, started at the
    mean; worldsim/models/dit.py ``head_pool``); None keeps the world's."""
    head_agent_weight: float = 8.0
    head_share: float = 0.1
    """The heads' share of the round's minutes (on top of ``world_share``; with ``head_steps`` above 0)."""
    latent_reward_steps: int = 0
    """Last in the world phase, this many steps that fit the round world's latent reward (envs/loop/latent_reward.py:
    a classifier of each frame's reward from its latents, which the engine then pays instead of the reward head) on
    all the real data, the round's new episodes included; 0: none (a world that has one keeps it unchanged through
    the fine-tune). For games whose rewards take a few values (Atari scores): Boxing's loop3 round world paid its
    agent's real bouts 50.7 where the game paid 53.8, its reward head 23.4 (checkpoints/wip/README.md, boxing-lr/).
    Reads the data's pre-encoded latents: a fresh machine encodes them first (Boxing, 156k frames: ~21 min)."""
    latent_reward_share: float = 0.05
    """The latent reward's share of the round's minutes (with ``latent_reward_steps`` above 0)."""
    agent_timesteps: int = 50_000
    """Agent decisions in the world per round (``agent.train`` settings otherwise)."""
    select_episodes: int = 0
    """After the agent phase, the new agent and the one the round started from drive this many real episodes (seeds
    from ``select_seed``, the same every round) and the better goes on: scored, and playing and training on next
    round (envs/loop/select.py). Their frames count as real frames used. 0: the new agent always goes on."""
    select_seed: int = 300_000_000
    max_frames: int | None = None
    """Frames per real episode, played for data and scored (None: the game's own limit)."""
    eval_episodes: int = 20
    """Real episodes that score the agent after each round (held-out seeds from ``eval_seed``)."""
    eval_seed: int = 500_000_000
    score_deterministic: bool = True
    """Score with the agent's most likely action (``agent_eval.deterministic``); False samples from its policy as
    it plays for data (a policy can score better sampled: Boxing's round-1 agent scored -32.7 on its held-out
    bouts with its most likely action, -8.0 on its 12 data bouts sampled with 5% random actions)."""
    world_episodes: int = 8
    """Episodes of the agent in its world for the predicted return (0: none)."""
    rebuild: str = "exact"
    """A finished round's episodes rebuilt on a fresh machine that differ from the recorded ones (another CPU
    kind can sample another action somewhere): ``exact`` refuses them (removed; the loop stops and says so),
    ``keep`` keeps them as the round's data and records the difference in ``round-k/rebuilt.json``."""
    baseline: str | None = None
    """The ``agent_log.jsonl`` of a ``agent.train.env=real`` run, drawn in loop.png at the same real frames."""

    def validate(self) -> None:
        if self.rounds < 1 or self.play_frames < 1 or self.world_steps < 1 or self.agent_timesteps < 1:
            raise ValueError(f"loop.rounds, play_frames, world_steps and agent_timesteps must be >= 1, got {self}")
        if self.eval_episodes < 1 or self.world_episodes < 0:
            raise ValueError("loop.eval_episodes must be >= 1 and loop.world_episodes >= 0")
        if self.world_from not in ("previous", "start"):
            raise ValueError(f"loop.world_from is previous or start, got {self.world_from!r}")
        if self.select_episodes < 0:
            raise ValueError(f"loop.select_episodes must be >= 0 (0: no selection), got {self.select_episodes}")
        if self.rebuild not in ("exact", "keep"):
            raise ValueError(f"loop.rebuild is exact or keep, got {self.rebuild!r}")
        if not 0 <= self.explore <= 1:
            raise ValueError(f"loop.explore is a probability, got {self.explore}")
        if self.round_minutes is not None and not self.round_minutes > 0:
            raise ValueError(f"loop.round_minutes must be above 0 (or null), got {self.round_minutes}")
        if self.head_reward_space not in (None, "symlog", "raw", "sign"):
            raise ValueError(f"loop.head_reward_space is symlog, raw, sign or null, got {self.head_reward_space!r}")
        if self.head_pool not in (None, "mean", "attention"):
            raise ValueError(f"loop.head_pool is mean, attention or null, got {self.head_pool!r}")
        if not self.terminal_weight > 0:
            raise ValueError(f"loop.terminal_weight must be above 0 (1: clips alike), got {self.terminal_weight}")
        if self.head_steps < 0 or self.head_lr <= 0 or self.head_agent_weight < 0:
            raise ValueError("loop.head_steps must be >= 0, head_lr above 0 and head_agent_weight >= 0")
        if self.guidance_steps < 0 or not self.guidance_scale > 0:
            raise ValueError("loop.guidance_steps must be >= 0 and guidance_scale above 0 (1: the world's own key "
                             f"response kept), got {self.guidance_steps} and {self.guidance_scale}")
        if self.latent_reward_steps < 0:
            raise ValueError(f"loop.latent_reward_steps must be >= 0 (0: none), got {self.latent_reward_steps}")
        heads = self.head_share if self.head_steps else 0.0
        guidance = self.guidance_share if self.guidance_steps else 0.0
        latent = self.latent_reward_share if self.latent_reward_steps else 0.0
        if not (0 < self.world_share and 0 < self.agent_share and (not self.head_steps or 0 < self.head_share)
                and (not self.guidance_steps or 0 < self.guidance_share)
                and (not self.latent_reward_steps or 0 < self.latent_reward_share)
                and self.world_share + self.agent_share + heads + guidance + latent <= 1):
            raise ValueError("loop.world_share and agent_share (and head_share with head_steps, guidance_share with "
                             "guidance_steps, latent_reward_share with latent_reward_steps) must be above 0 and add "
                             "up to at most 1")
