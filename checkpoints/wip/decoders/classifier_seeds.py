"""The eval's two-sample classifier (data driver, 8 held-out episodes, as stage=eval) on worlds that differ by decoder,
with three more classifier seeds. Usage: python checkpoints/wip/decoders/classifier_seeds.py WORLD [WORLD ...]"""
import sys, json, numpy as np, torch
from worldsim.world import load_world
from envs.evaluation.real import real_run
from worldsim.metrics.two_sample import two_sample_accuracy
c, s, horizon, seed, n = 8, 50, 64, 1000003, 8
w0 = load_world(sys.argv[1], 'cpu', torch.bfloat16)
need = s + c + horizon
eps = [e for e in real_run(w0, need, n, seed) if len(e) >= need]
real = np.stack([e.frames[s:s + c + horizon] for e in eps]); acts = np.stack([e.actions[s:s + c + horizon] for e in eps])
for p in sys.argv[1:]:
    w = load_world(p, 'cpu', torch.bfloat16)
    with torch.no_grad():
        gen = w.simulator(len(real), seed=seed).rollout(real[:, :c], acts[:, :c], acts[:, c:])
    res = {k: [round(two_sample_accuracy(real[:, c:], gen, pairs, 1000, seed=sd), 3) for sd in (1, 2, 3)] for k, pairs in (("frames", False), ("pairs", True))}
    print(p, json.dumps(res), flush=True)
