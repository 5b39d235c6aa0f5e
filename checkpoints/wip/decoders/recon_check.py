"""Reconstruction check of world files' decoders: held-out data clips (every 10th episode, frames 200-264) through each
world's VAE; frame-to-frame change, sharpness and warping error as ratios to the real frames'.
Usage: python checkpoints/wip/decoders/recon_check.py DATA_DIR WORLD [WORLD ...]"""
import sys, numpy as np, torch
from worldsim.data.dataset import EpisodeDataset
from worldsim.world import load_world
from worldsim.metrics.image import sharpness, frame_change
from envs.evaluation.consistency import mean_warp_error
from envs.evaluation.fidelity import reconstruct
d = EpisodeDataset(sys.argv[1])
clips = []
for i in range(0, len(d), 10):
    e = d.episode(i); f = np.asarray(e['frames'] if isinstance(e, dict) else e.frames)
    if len(f) >= 300: clips.append(f[200:265])
real = np.stack(clips[:8])
for p in sys.argv[2:]:
    w = load_world(p)
    with torch.no_grad():
        rec = reconstruct(w, real)[:, 1:]
    r = real[:, 1:]
    print(p, 'recon frame_change ratio %.3f sharpness ratio %.3f warp ratio %.3f' % (frame_change(rec) / frame_change(r), sharpness(rec.reshape(-1, *rec.shape[2:])) / sharpness(r.reshape(-1, *r.shape[2:])), mean_warp_error(rec) / mean_warp_error(r)), flush=True)
