"""train.py runs end to end for a few steps, as a user types it."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from worldsim.models.vae import load_vae

pytestmark = pytest.mark.slow  # each test trains a tiny world or runs train.py stages (minutes in all)

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
    world_file = tmp_path / "world.safetensors"
    out = run("stage=export", f"export.out={world_file}", "export.contexts=3", "export.context_frames=4", *common)
    assert "play.py --checkpoint" in out
    from worldsim.world import load_world

    world = load_world(world_file)
    assert world.context_frames.shape == (3, 4, 64, 64, 3) and world.context_actions.shape == (3, 4)
    assert world.source["env_id"] == "CarRacing-v3" and world.source["keymap"]["name"] == "carracing"
    assert world.meta["dynamics_step"] == 12 and world.dit.cfg.window == 4 and world.fps == 50
    # The world file holds the trained weights, rounded to float16 and nothing else.
    trained = load_dynamics(runs / "dynamics.safetensors")[0].state_dict()
    for name, w in world.dit.state_dict().items():
        assert torch.equal(w, trained[name].half().float()), name
    vae_trained = load_vae(runs / "vae.safetensors")[0].state_dict()
    for name, w in world.vae.state_dict().items():
        assert torch.equal(w, vae_trained[name].half().float() if w.is_floating_point() else vae_trained[name]), name
    # Guidance and step distillation, the teacher (and starting point) being the exported world file.
    distilled = tmp_path / "distilled"  # no VAE there: it comes from the world file
    out = run("stage=dynamics", "vae=tiny", "dynamics=tiny", "dynamics.train.heldout_every=2", "dynamics.train.steps=2",
              f"dynamics.train.init_from={world_file}", "dynamics.train.distill_guidance=3", "dynamics.train.log_every=1",
              "dynamics.train.distill_steps=2", f"data_dir={data}", f"run_dir={distilled}", "world.max_episode_steps=20")
    assert f"initialised from {world_file}" in out and '"guided"' in (distilled / "dynamics_log.jsonl").read_text()
    distilled_meta = load_dynamics(distilled / "dynamics.safetensors")[1]
    assert distilled_meta["step"] == 2 and distilled_meta["history"][-1]["distill_steps"] == 2
    # A fine-tune anchored to the world it starts from: both losses logged, the anchor in the ledger.
    anchored = tmp_path / "anchored"
    run("stage=dynamics", "vae=tiny", "dynamics=tiny", "dynamics.train.heldout_every=2", "dynamics.train.steps=2",
        f"dynamics.train.init_from={world_file}", "dynamics.train.anchor_weight=2", "dynamics.train.log_every=1",
        f"data_dir={data}", f"run_dir={anchored}", "world.max_episode_steps=20")
    rows = [json.loads(r) for r in (anchored / "dynamics_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "anchor" in r and r["flow"] > 0] == [1, 2]
    assert load_dynamics(anchored / "dynamics.safetensors")[1]["history"][-1]["anchor_weight"] == 2
    # The two-call world teaches a one-call (commit=draft) student, named as the teacher.
    drafted = tmp_path / "drafted"
    run("stage=dynamics", "vae=tiny", "dynamics=tiny", "dynamics.train.heldout_every=2", "dynamics.train.steps=2",
        f"dynamics.train.init_from={world_file}", f"dynamics.train.teacher={world_file}", "dynamics.model.commit=draft",
        "dynamics.train.distill_guidance=1", "dynamics.train.log_every=1", f"data_dir={data}", f"run_dir={drafted}",
        "world.max_episode_steps=20")
    draft_dit, draft_meta = load_dynamics(drafted / "dynamics.safetensors")
    assert draft_dit.cfg.commit == "draft" and '"guided"' in (drafted / "dynamics_log.jsonl").read_text()
    assert draft_meta["history"][-1]["teacher"] == str(world_file)
    vae2, meta2 = load_vae(distilled / "vae.safetensors")
    assert meta2["latent_std"] == world.latent_std.tolist() and meta2["from_world"] == str(world_file)
    vae_run = load_vae(runs / "vae.safetensors")[0]
    torch.testing.assert_close(vae2.encode(x), vae_run.encode(x), atol=1e-2, rtol=0)  # float16 weights in the world file
    # Refit only the heads (reward in raw space, attention-pooled) on the world's frozen network: nothing else
    # moves, and the new pooling queries learn.
    heads = tmp_path / "heads"
    out = run("stage=dynamics", "vae=tiny", "dynamics=tiny", "dynamics.train.heldout_every=2", "dynamics.train.steps=3",
              f"dynamics.train.init_from={world_file}", "dynamics.train.train_only=heads", "dynamics.train.ema_decay=0",
              "dynamics.model.reward_space=raw", "dynamics.model.head_pool=attention", f"data_dir={data}",
              f"run_dir={heads}", "world.max_episode_steps=20")
    refit = load_dynamics(heads / "dynamics.safetensors")[0]
    assert refit.cfg.reward_space == "raw" and world.dit.cfg.reward_space == "symlog"
    assert refit.cfg.head_pool == "attention" and world.dit.cfg.head_pool == "mean"
    before = world.dit.state_dict()
    moved = {k for k, w in refit.state_dict().items() if k not in before or not torch.equal(w, before[k])}
    assert {"reward_pool.query", "done_pool.query"} <= moved, moved
    assert all(k.startswith(("reward_head.", "done_head.", "reward_pool.", "done_pool.")) for k in moved), moved
    out = run("stage=video", "video.episode=1", *common)
    assert (runs / "episode-1.mp4").stat().st_size > 0


def test_recipe_tiny_makes_a_playable_world_in_one_command(tmp_path):
    """The README's first try, exactly as typed, in a fresh folder: collect, VAE, dynamics, export and eval in
    turn; the world plays; nothing lands in checkpoints/. Run again: every stage resumes (nothing re-collected,
    training already at its last step, the run's own export replaced)."""
    import hashlib

    shipped = ROOT / "checkpoints" / "carracing.safetensors"
    before = hashlib.sha256(shipped.read_bytes()).hexdigest()
    cmd = [sys.executable, str(ROOT / "train.py"), "stage=all", "recipe=tiny"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert [line for line in proc.stdout.splitlines() if line.startswith("== stage=")] == [
        f"== stage={s} ==" for s in ("collect", "vae", "dynamics", "export", "eval")]
    world_file = tmp_path / "runs" / "carracing-tiny" / "carracing.safetensors"
    report = json.loads((tmp_path / "runs" / "carracing-tiny" / "eval" / "report.json").read_text())
    assert report["checkpoint"] == str(Path("runs/carracing-tiny/carracing.safetensors"))
    assert "play.py --checkpoint runs/carracing-tiny/carracing.safetensors" in proc.stdout
    from envs.worldenv.env import WorldModelEnv

    env = WorldModelEnv(world_file, device="cpu")
    obs, _ = env.reset(seed=0)
    frames = [env.step(a)[0] for a in (3, 3, 1, 2)]
    assert obs.shape == (64, 64, 3) and not np.array_equal(frames[0], frames[-1])
    assert hashlib.sha256(shipped.read_bytes()).hexdigest() == before
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0 and "nothing to do" in proc.stdout and "at step 600" in proc.stdout


def test_export_never_replaces_a_file_it_was_not_told_to(tmp_path, carracing_data):
    common = [f"data_dir={carracing_data}", f"run_dir={tmp_path / 'run'}", "vae=tiny", "dynamics=tiny", "device=cpu",
              "vae.train.steps=2", "vae.train.heldout_every=2", "dynamics.train.steps=2", "dynamics.train.heldout_every=2"]
    run("stage=vae", *common)
    run("stage=dynamics", *common)
    out = run("stage=export", "export.contexts=2", *common)  # default: the run folder
    own = tmp_path / "run" / "carracing.safetensors"
    assert f"wrote {own}" in out
    run("stage=export", "export.contexts=2", *common)  # the run's own export is the run's to replace
    keep = tmp_path / "shipped.safetensors"
    keep.write_bytes(b"a world the user keeps")
    proc = subprocess.run([sys.executable, "train.py", "stage=export", f"export.out={keep}", *common], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2 and "export.overwrite=true" in proc.stderr and len(proc.stderr.splitlines()) == 1
    assert keep.read_bytes() == b"a world the user keeps"
    out = run("stage=export", f"export.out={keep}", "export.overwrite=true", "export.contexts=2", *common)
    from worldsim.world import load_world

    assert load_world(keep).context_frames.shape[:2] == (2, 4)  # context length: the tiny window


def test_user_mistakes_are_one_line_and_exit_2(tmp_path):
    for args, says in ((["stage=bogus"], "unknown stage='bogus'"),
                       (["vae.train.stepz=3"], "no setting 'vae.train.stepz'"),
                       (["stage=export", f"run_dir={tmp_path}"], "no checkpoint at")):
        proc = subprocess.run([sys.executable, "train.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and proc.stderr.strip().startswith("error: ") and says in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr, proc.stderr


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


def test_ddp_two_cpu_processes(tmp_path, carracing_data):
    """torchrun with 2 processes (gloo): both stages train, rank 0 alone logs and saves, resume works."""
    common = [f"data_dir={carracing_data}", f"run_dir={tmp_path}", "device=cpu", "vae=tiny", "dynamics=tiny"]

    def torchrun(*args):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "train.py", *args]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                              env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
        return proc.stdout

    out = torchrun("stage=vae", "vae.train.steps=4", "vae.train.eval_every=4", "vae.train.log_every=2",
                   "vae.train.heldout_every=2", *common)
    assert "processes 2" in out and out.count("heldout_psnr") == 1
    out = torchrun("stage=dynamics", "dynamics.train.steps=4", "dynamics.train.eval_every=4", "dynamics.train.log_every=2",
                   "dynamics.train.heldout_every=2", *common)
    assert "processes 2" in out and out.count("rollout_psnr") == 1
    rows = [line for line in (tmp_path / "dynamics_log.jsonl").read_text().splitlines() if '"frames_per_s"' in line]
    assert len(rows) == 2  # one writer: steps 2 and 4, not once per rank
    from worldsim.training.dynamics_trainer import load_dynamics

    assert load_dynamics(tmp_path / "dynamics.safetensors")[1]["step"] == 4
    out = torchrun("stage=dynamics", "dynamics.train.steps=6", "dynamics.train.eval_every=6", "dynamics.train.heldout_every=2",
                   *common)
    assert out.count("at step 4") == 1 and load_dynamics(tmp_path / "dynamics.safetensors")[1]["step"] == 6


def _tiny_atari_world(tmp_path, world: str):
    """Collect ``world`` with its driver, train a tiny VAE and dynamics model, export, evaluate (second driver:
    random play), play headless into a video and pass Gymnasium's env checker -> (world file, eval report, env)."""
    pytest.importorskip("ale_py")
    import gymnasium as gym
    from gymnasium.utils.env_checker import check_env

    import envs  # noqa: F401  (registers the ids)

    cmd = [sys.executable, str(ROOT / "train.py"), f"world={world}", "stage=all", "recipe=tiny", "collect.frames=900",
           "world.max_episode_steps=150", "vae.train.steps=60", "vae.train.eval_every=60", "dynamics.train.steps=60",
           "dynamics.train.eval_every=60", "eval.second_driver=random", "eval.memory_episodes=0",
           "eval.realism_steps=20", "eval.idm_steps=10", "eval.long_frames=40"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    world_file = tmp_path / "runs" / f"{world}-tiny" / f"{world}.safetensors"
    report = json.loads((tmp_path / "runs" / f"{world}-tiny" / "eval" / "report.json").read_text())
    assert report["second_driver"]["driver"] == "random"

    video = tmp_path / f"{world}.mp4"
    play = subprocess.run([sys.executable, str(ROOT / "play.py"), "--checkpoint", str(world_file), "--headless",
                           "--frames", "12", "--record", str(video)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert play.returncode == 0, play.stdout[-2000:] + play.stderr[-3000:]
    assert video.stat().st_size > 0

    env = gym.make("worldsim/World-v0", checkpoint=str(world_file), device="cpu")
    check_env(env.unwrapped, skip_render_check=True)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (64, 64, 3)
    return world_file, report, env


def test_tiny_pong_world_trains_plays_and_checks(tmp_path):
    """The Atari path end to end on Pong: the report reads the paddle, world and game, from the same states."""
    _, report, env = _tiny_atari_world(tmp_path, "pong")
    paddle = report["key_objects"]["paddle_response"]  # the paddle read from the same states, world and game
    assert paddle["states"] >= 1 and len(paddle["moved_real"]) == 6 and paddle["moved_real"][2] < paddle["moved_real"][3]
    assert {"paddle_gap_ratio_ge_0.9", "paddle_direction_agreement_ge_0.9"} <= set(report["goals"])
    assert env.action_space.n == 6
    keys = env.unwrapped.get_keys_to_action()
    import pygame

    assert keys[(pygame.K_UP,)] == 2 and keys[(pygame.K_DOWN,)] == 3  # the paddle's up and down
    env.close()


def test_tiny_boxing_world_trains_plays_and_checks(tmp_path):
    """The Atari path end to end on Boxing, the shipped Atari world: the report reads both boxers."""
    _, report, env = _tiny_atari_world(tmp_path, "boxing")
    objects = report["key_objects"]
    assert objects["reconstructed"]["white_frames"] > 0 and objects["copy_last"]["black_recall"] is not None
    assert {"vae_keeps_boxers_recall_ge_0.9", "boxers_survive_long_rollout", "idm_ratio_ge_0.9"} <= set(report["goals"])
    assert all("generated_boxer_rate" in seg for seg in report["long_horizon"])
    punches = objects["long_rollout_punches"]  # the punches of the long rollout, world and game
    assert punches["real"]["in_reach"] > 0 and set(punches["generated"]) == {"in_reach", "white", "black"}
    assert set(objects["punches"]) == {"real", "reconstructed", "generated"}
    assert report["goals"]["punches_drawn_ge_half_the_games"] in (True, False)
    assert env.action_space.n == 18
    keys = env.unwrapped.get_keys_to_action()
    import pygame

    assert keys[(pygame.K_SPACE,)] == 1 and keys[(pygame.K_LEFT, pygame.K_UP)] == 7  # FIRE, UPLEFT
    env.close()
