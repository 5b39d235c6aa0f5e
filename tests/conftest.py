import os

import pytest

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")


@pytest.fixture(scope="session")
def carracing_data(tmp_path_factory):
    """A small real CarRacing dataset (driving policy), collected once per session."""
    from envs.games.source import SourceConfig
    from envs.recording.collect import CollectConfig, collect

    out = tmp_path_factory.mktemp("carracing")
    world = SourceConfig(max_episode_steps=24)
    collect(world, CollectConfig(out=str(out), frames=100, workers=2, episodes_per_shard=2, progress=False))
    return out


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    """A tiny world file made in the test (random networks with perturbed weights, so actions change frames)."""
    import numpy as np
    import torch

    from worldsim.engine.sampler import SamplerConfig
    from worldsim.models.dit import DiT, DiTConfig
    from worldsim.models.vae import CausalVAE, VAEConfig
    from worldsim.world import save_world

    torch.manual_seed(0)
    vae = CausalVAE(VAEConfig(encoder_channels=(8, 16, 16), decoder_channels=(8, 16, 16), norm_groups=4, latent_channels=4))
    dit = DiT(DiTConfig(latent_channels=4, latent_size=16, patch_size=4, dim=32, depth=2, heads=2, window=4),
              {"type": "Discrete", "n": 5, "start": 0})
    with torch.no_grad():
        for p in dit.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    rng = np.random.default_rng(0)
    source = {"world": "tiny", "kind": "carracing", "env_id": "CarRacing-v3", "env_kwargs": {}, "frame_size": 64,
              "fps": 50.0, "action_space": dit.action_space, "max_episode_steps": 1000,
              "keymap": {"name": "carracing", "bindings": [[["left"], 1], [["right"], 2], [["up"], 3], [["down"], 4]],
                         "default": 0}}
    path = tmp_path_factory.mktemp("worlds") / "tiny.safetensors"
    save_world(path, vae, dit, source=source, sampler=SamplerConfig(steps=2), latent_mean=torch.zeros(4),
               latent_std=torch.ones(4), context_frames=rng.integers(0, 256, (3, 3, 64, 64, 3), dtype=np.uint8),
               context_actions=rng.integers(0, 5, (3, 3)), meta={"note": "test world"})
    return path
