"""train.py runs end to end for a few steps, as a user types it."""

import subprocess
import sys
from pathlib import Path

import torch

from worldsim.models.vae import load_vae

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> str:
    proc = subprocess.run([sys.executable, "train.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc.stdout


def test_collect_vae_dynamics_resume_and_video(tmp_path):
    data, runs = tmp_path / "data", tmp_path / "run"
    common = [f"data_dir={data}", f"run_dir={runs}", "world.max_episode_steps=20"]
    out = run("stage=collect", "collect.frames=60", "collect.workers=2", "collect.progress=false", *common)
    assert "frames/s" in out
    out = run("stage=vae", "vae=tiny", "device=cpu", "vae.train.heldout_every=2", *common)
    assert "heldout_psnr" in out and (runs / "vae.safetensors").exists()
    vae, meta = load_vae(runs / "vae.safetensors")
    assert meta["step"] == 20 and meta["source"]["env_id"] == "CarRacing-v3" and len(meta["latent_std"]) == 4
    x = torch.zeros(1, 1, 3, 64, 64)
    assert vae.decode(vae.encode(x)).shape == x.shape
    out = run("stage=vae", "vae=tiny", "device=cpu", "vae.train.steps=25", "vae.train.heldout_every=2", *common)
    assert "resumed from" in out and "at step 20" in out
    assert load_vae(runs / "vae.safetensors")[1]["step"] == 25
    out = run("stage=dynamics", "vae=tiny", "dynamics=tiny", "dynamics.train.heldout_every=2", "device=cpu", *common)
    assert "rollout_psnr" in out and (runs / "sample-0000010.mp4").exists()
    from worldsim.training.dynamics_trainer import load_dynamics

    dit, meta = load_dynamics(runs / "dynamics.safetensors")
    assert meta["step"] == 10 and meta["action_space"]["n"] == 5 and dit.cfg.window == 4
    out = run("stage=dynamics", "vae=tiny", "dynamics=tiny", "dynamics.train.heldout_every=2", "dynamics.train.steps=12", *common)
    assert "at step 10" in out and load_dynamics(runs / "dynamics.safetensors")[1]["step"] == 12
    out = run("stage=video", "video.episode=1", *common)
    assert (runs / "episode-1.mp4").stat().st_size > 0


def test_unknown_option_gets_a_clear_error(tmp_path):
    proc = subprocess.run([sys.executable, "train.py", "stage=bogus", f"run_dir={tmp_path}"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "unknown stage='bogus'" in proc.stderr + proc.stdout


def test_killed_training_saves_and_resumes(tmp_path, carracing_data):
    import signal

    args = [sys.executable, "train.py", "stage=vae", "vae=tiny", "device=cpu", f"data_dir={carracing_data}",
            f"run_dir={tmp_path}", "vae.train.steps=100000", "vae.train.log_every=2", "vae.train.heldout_every=2"]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:  # wait until it is really training
        if line.startswith("step="):
            break
    proc.send_signal(signal.SIGTERM)
    out = proc.stdout.read()
    assert proc.wait(timeout=120) == 130, out
    assert "interrupted at step" in out and "run the same command again to resume" in out
    step = load_vae(tmp_path / "vae.safetensors")[1]["step"]
    assert step >= 2
    out = run(*args[2:-3], "vae.train.steps=" + str(step + 2), "vae.train.heldout_every=2")
    assert f"resumed from {tmp_path / 'vae_state.safetensors'} at step {step}" in out
