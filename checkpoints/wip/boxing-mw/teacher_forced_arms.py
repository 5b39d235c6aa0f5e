"""Teacher-forced: does the DiT draw the punching arm when the real context is given and the target frame is
noised to level L? One Euler step x0 = x_L - L v, and N Euler steps from pure noise; the arm-out shares
(envs.games.objects.boxing.punch_rates) of the decoded targets, 48 frames of a recorded agent bout where the game
shows an arm out. With START, as the Boxing sampler plays instead: the target frame starts from the previous frame
noised to START and is made in 1, 2, 4 and 8 Euler steps from there. Ad-hoc, run from the project root:
``python checkpoints/wip/boxing-mw/teacher_forced_arms.py WORLD [START]``"""
import glob
import sys

import numpy as np
import torch

sys.path.insert(0, ".")
from envs.games.objects.boxing import arms_out, punch_rates
from worldsim.data.episodes import EpisodeShard
from worldsim.diffusion.flow import add_noise
from worldsim.frames import to_uint8
from worldsim.world import load_world

torch.manual_seed(0)
w = load_world(sys.argv[1])
enc = w.latent_encoder()
e = EpisodeShard(sorted(glob.glob("data/boxing/ep00000[7-9]*.safetensors"))[0]).read(0)
F, A = e["frames"], e["actions"]
arm = arms_out(F)
idx = [t for t in range(16, len(F)) if arm["white"][t] or arm["black"][t]][:48]
clips = np.stack([F[t - 15:t + 1] for t in idx])
acts = torch.as_tensor(np.stack([A[t - 15:t + 1] for t in idx]))
print("real targets", punch_rates(clips[:, -1]))


def euler(xl, top: float, n: int):
    """The target frame from ``xl`` at level ``top`` in ``n`` Euler steps, the real context at 0.2: arm-out shares."""
    ts = torch.linspace(top, 0.0, n + 1)
    for i in range(n):
        lv = torch.full(z.shape[:2], 0.2)
        lv[:, -1] = ts[i]
        x = add_noise(z, lv, torch.randn_like(z))
        x[:, -1:] = xl
        v, _, _ = w.dit(x, lv, acts, torch.zeros(z.shape[:2], dtype=torch.bool))
        xl = xl + (ts[i + 1] - ts[i]) * v[:, -1:].float()
    return punch_rates(to_uint8(w.vae.decode(enc.norm.denormalize(xl))[:, 0]))


with torch.no_grad():
    z = enc(torch.as_tensor(clips))
    rec = to_uint8(w.vae.decode(enc.norm.denormalize(z[:, -1:]))[:, 0])
    print("vae", punch_rates(rec))
    if len(sys.argv) > 2:
        S = float(sys.argv[2])
        for n in (1, 2, 4, 8):
            print("start", S, n, "steps", euler((1 - S) * z[:, -2:-1] + S * torch.randn_like(z[:, -1:]), S, n), flush=True)
        sys.exit(0)
    for L in (0.1, 0.3, 0.5, 0.8, 1.0):
        lv = torch.full(z.shape[:2], 0.2)
        lv[:, -1] = L
        noise = torch.randn_like(z)
        x = add_noise(z, lv, noise)
        v, _, _ = w.dit(x, lv, acts, torch.zeros(z.shape[:2], dtype=torch.bool))
        x0 = x[:, -1:] - L * v[:, -1:].float()
        img = to_uint8(w.vae.decode(enc.norm.denormalize(x0))[:, 0])
        print("level", L, punch_rates(img))
    for n in (4, 8, 16):
        print("euler from noise", n, "steps", euler(torch.randn_like(z[:, -1:]), 1.0, n))
