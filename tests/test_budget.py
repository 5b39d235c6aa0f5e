"""Bounded, saved training: train.minutes, the training ledger, folder locks and refusals that keep files."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _train(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "train.py", *args], cwd=cwd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_a_budget_is_a_deadline_and_nested_budgets_end_at_the_earlier():
    from worldsim.training.budget import Budget, TrainConfig

    assert not Budget().limited and not Budget().expired() and Budget().left_text() == ""
    b = Budget(10)
    assert b.limited and 599 < b.left_s() <= 600 and b.left_text().endswith("left")
    assert b.within(1).left_s() <= 60 and b.within(None).deadline == b.deadline and b.within(20).deadline == b.deadline
    assert Budget(deadline=0.0).expired()
    with pytest.raises(ValueError, match="train.minutes"):
        TrainConfig(minutes=0).validate()


def test_history_entries_add_up_over_resumes_and_joins_keep_each_once():
    from worldsim.training.history import RunHistory, joined

    first = RunHistory("vae", "runs/x", [], 0, 16).entries(5)
    assert first[0]["steps"] == [0, 5] and first[0]["frames"] == 80 and "cores" in first[0]["machine"]
    second = RunHistory("vae", "runs/x", first, 5, 16).entries(9, finished=True)
    assert [e["steps"] for e in second] == [[0, 5], [5, 9]] and second[-1]["finished"]
    assert RunHistory("vae", "runs/x", first, 5, 16).entries(5) == first  # nothing trained: nothing added
    assert joined(second, second[:1]) == second


@pytest.mark.slow
def test_train_minutes_stops_each_stage_saved_and_the_printed_command_continues(carracing_data, tmp_path):
    run = tmp_path / "run"
    common = [f"data_dir={carracing_data}", f"run_dir={run}", "device=cpu"]
    vae = ["stage=vae", "vae=tiny", "vae.train.heldout_every=2", "vae.train.log_every=1", *common]
    stopped = _train(*vae, "train.minutes=0.0005")
    assert stopped.returncode == 75, stopped.stderr[-2000:]
    line = [x for x in stopped.stdout.splitlines() if "time budget reached" in x][-1]
    assert line.startswith("vae: time budget reached at step") and "continue with: python train.py" in line
    from worldsim.models.vae import load_vae

    step = load_vae(run / "vae.safetensors")[1]["step"]
    assert 1 <= step < 20  # saved where it stopped
    command = line.split("continue with: ")[1].split()
    assert command[:2] == ["python", "train.py"] and "train.minutes=0.0005" in command
    again = _train(*[a for a in command[2:] if not a.startswith("train.minutes")])
    assert again.returncode == 0 and f"at step {step}" in again.stdout, again.stderr[-2000:]
    meta = load_vae(run / "vae.safetensors")[1]
    assert meta["step"] == 20 and [e["steps"] for e in meta["history"]] == [[0, step], [step, 20]]
    dyn = _train("stage=dynamics", "vae=tiny", "dynamics=tiny", "dynamics.train.heldout_every=2", *common,
                 "train.minutes=0.0005")
    assert dyn.returncode == 75 and "dynamics: time budget reached" in dyn.stdout, dyn.stderr[-2000:]
    from worldsim.training.dynamics_trainer import load_dynamics

    dmeta = load_dynamics(run / "dynamics.safetensors")[1]
    assert 1 <= dmeta["step"] < 10 and dmeta["history"][-1]["stage"] == "dynamics"
    world = tmp_path / "w.safetensors"
    assert _train("stage=export", f"export.out={world}", "export.contexts=2", "export.context_frames=4",
                  *common).returncode == 0
    from worldsim.world import load_world

    hist = load_world(world).meta["history"]
    assert [e["stage"] for e in hist] == ["vae", "vae", "dynamics"]  # the world's ledger: both networks' runs


def _hold(folder: Path):
    code = ("import sys, time; from worldsim.locks import lock_folder; lock_folder(sys.argv[1]); print('held', "
            "flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(folder)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_folder_in_use_is_refused_with_one_line_and_freed_when_its_holder_ends(tmp_path):
    from worldsim.locks import FolderInUse, lock_folder, unlock_folder

    data = tmp_path / "data"
    holder = _hold(data)
    try:
        with pytest.raises(FolderInUse, match=f"{data} is in use by pid {holder.pid}"):
            lock_folder(data, "data folder")
        other = _train("stage=collect", f"data_dir={data}", "collect.frames=10", "collect.progress=false")
        assert other.returncode == 2 and other.stderr.strip().count("\n") == 0, other.stderr[-2000:]
        assert "in use" in other.stderr and str(data) in other.stderr
        assert not list(data.glob("*.safetensors"))
    finally:
        holder.kill()
        holder.wait()
    lock_folder(data)  # the holder was killed: its lock went with it
    lock_folder(data)  # re-entrant within a process
    unlock_folder(data)
    unlock_folder(data)


def test_an_agent_file_is_replaced_only_when_asked(tiny_world, tmp_path):
    pytest.importorskip("stable_baselines3")
    keep = tmp_path / "precious.safetensors"
    keep.write_bytes(Path(tiny_world).read_bytes())
    args = ["stage=agent", f"agent.world={tiny_world}", f"run_dir={tmp_path / 'run'}", f"agent.out={keep}",
            "agent.train.worlds=2", "agent.train.n_steps=4", "agent.train.batch_size=8", "agent.train.epochs=1",
            "agent.train.window=null", "agent.train.timesteps=8", "agent.train.progress=false",
            "agent.train.starts=contexts", "agent.net.action_repeat=2"]
    refused = _train(*args)
    assert refused.returncode == 2 and "agent.overwrite=true" in refused.stderr, refused.stderr[-2000:]
    assert keep.read_bytes() == Path(tiny_world).read_bytes()
    done = _train(*args, "agent.overwrite=true")
    assert done.returncode == 0, done.stderr[-2000:]
    from envs.agent.network import load_agent

    assert load_agent(keep).world["file"] == str(tiny_world)  # outside the project: as given, not resolved


def test_an_agent_or_world_file_of_another_game_than_world_is_refused():
    agent = ROOT / "checkpoints" / "carracing-agent.safetensors"
    out = _train("world=boxing", "stage=agent_eval", f"agent_eval.agent={agent}")
    assert out.returncode == 2 and "world=boxing is ALE/Boxing-v5" in out.stderr and "CarRacing-v3" in out.stderr
    out = _train("world=boxing", "stage=eval", f"checkpoint={ROOT / 'checkpoints' / 'carracing.safetensors'}")
    assert out.returncode == 2 and "world=boxing is ALE/Boxing-v5" in out.stderr
    import play

    assert play.main(["--headless", "--frames", "2", "--agent", str(agent)]) == 2  # --agent without --policy agent
    assert play.main(["--world", "boxing", "--headless", "--frames", "2", "--policy", "agent", "--agent",
                      str(agent)]) == 2


def test_train_minutes_stops_an_agent_run_saved_and_the_same_command_continues_it(tiny_world, tmp_path):
    pytest.importorskip("stable_baselines3")
    run = tmp_path / "run"
    args = ["stage=agent", f"agent.world={tiny_world}", f"run_dir={run}", "agent.train.worlds=2", "agent.train.n_steps=4",
            "agent.train.batch_size=8", "agent.train.epochs=1", "agent.train.window=null", "agent.train.timesteps=400",
            "agent.train.progress=false", "agent.train.starts=contexts", "agent.net.action_repeat=2",
            "agent.train.save_every=1000"]
    stopped = _train(*args, "train.minutes=0.002")
    assert stopped.returncode == 75 and "agent: time budget reached at" in stopped.stdout, stopped.stderr[-2000:]
    from envs.agent.network import load_agent

    agent = run / "agent" / "tiny-agent.safetensors"
    done = load_agent(agent).meta["decisions"]
    assert 0 <= done < 400 and done % 8 == 0  # saved at a rollout boundary (2 worlds x 4 steps)
    again = _train(*args)
    assert again.returncode == 0 and f"resuming the agent from {done} decisions" in again.stdout, again.stderr[-2000:]
    meta = load_agent(agent).meta
    assert meta["decisions"] == 400 and [e["steps"] for e in meta["history"]][-1] == [done, 400]


def test_the_ledger_table_names_how_each_run_trained():
    """`python -m worldsim.ledger`'s table: each run's steps, whether it finished, and the settings that made it
    differ from a plain run (step distillation, the negative-reward weight)."""
    from worldsim.ledger import table

    rows = table([{"stage": "dynamics", "steps": [0, 554], "frames": 70912, "hours": 1.42, "finished": False,
                   "init_from": "w.safetensors", "distill_guidance": 1.0, "distill_steps": 4,
                   "reward_negative_weight": 3.0}]).splitlines()
    assert "0 → 554 (stopped)" in rows[2] and "70,912" in rows[2]
    assert "w.safetensors distill_guidance=1.0 distill_steps=4 reward_negative_weight=3.0" in rows[2]
