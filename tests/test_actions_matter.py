"""A tiny DiT trained briefly on a synthetic world where the action decides the motion must follow the action."""

import pytest
import torch
import torch.nn.functional as F

from worldsim.diffusion.flow import add_noise, sample_levels, timesteps, velocity
from worldsim.models.dit import DiT, DiTConfig

SIZE = 8


def bars(pos: torch.Tensor) -> torch.Tensor:
    """A vertical bar at column pos: (B, T) -> latents (B, T, 2, SIZE, SIZE) in {-1, 1}."""
    x = F.one_hot(pos, SIZE).float()[:, :, None, None, :].expand(-1, -1, 2, SIZE, -1)
    return x * 2 - 1


def episodes(b: int, t: int, gen: torch.Generator):
    """Action a in {0, 1, 2} moves the bar by a - 1 (wrapping); actions[t] led to frame t."""
    actions = torch.randint(0, 3, (b, t), generator=gen)
    start = torch.randint(0, SIZE, (b, 1), generator=gen)
    steps = (actions - 1).clone()
    steps[:, 0] = 0
    return bars((start + steps.cumsum(1)) % SIZE), actions, (start + steps.cumsum(1)) % SIZE


@pytest.mark.slow
def test_actions_decide_the_predicted_motion():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    cfg = DiTConfig(latent_channels=2, latent_size=SIZE, patch_size=2, dim=64, depth=2, heads=2, window=4)
    dit = DiT(cfg, {"type": "Discrete", "n": 3, "start": 0})
    opt = torch.optim.AdamW(dit.parameters(), lr=2e-3)
    for _ in range(1000):  # fewer steps learn only 'copy the last frame'
        z0, actions, _ = episodes(16, 4, gen)
        # Actions only matter where the input hides the answer: weight training towards high noise.
        levels = sample_levels(16, 4, mean=1.0, generator=gen)
        noise = torch.randn(z0.shape, generator=gen)
        v = dit(add_noise(z0, levels, noise), levels, actions)[0]
        loss = F.mse_loss(v, velocity(z0, noise))
        opt.zero_grad()
        loss.backward()
        opt.step()

    # Sample the 4th frame for each action from the same 3-frame context.
    z0, actions, pos = episodes(32, 4, torch.Generator().manual_seed(1))
    dit.eval()
    correct, frames = 0, []
    with torch.no_grad():
        for a in range(3):
            acts = actions.clone()
            acts[:, 3] = a
            x = torch.randn(32, 1, 2, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
            ts = timesteps(4)
            for k in range(4):
                lv = torch.cat([torch.full((32, 3), 0.05), ts[k].expand(32, 1)], 1)
                v = dit(torch.cat([z0[:, :3], x], 1), lv, acts)[0][:, -1:]
                x = x + (ts[k + 1] - ts[k]) * v
            predicted = x[:, 0].mean((1, 2)).argmax(-1)  # column of the bar
            correct += (predicted == (pos[:, 2] + a - 1) % SIZE).sum().item()
            frames.append(x)
    accuracy = correct / (3 * 32)
    # A model blind to actions predicts one position per context, right for at most one action of three: <= 1/3.
    assert accuracy > 0.6, f"the model ignores actions: {accuracy:.2f} of moves follow the action"
    assert (frames[0] - frames[2]).abs().mean() > 0.3
