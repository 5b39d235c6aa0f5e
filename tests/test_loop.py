"""stage=loop: rounds of real play, world fine-tuning, agent training and scoring, resumable."""

import json
import shutil
from pathlib import Path

import pytest
import torch

pytest.importorskip("stable_baselines3")


def _configs():
    from envs.agent.network import AgentConfig
    from envs.agent.training import AgentTrainConfig
    from worldsim.training.dynamics_trainer import DynamicsTrainConfig

    dyn = DynamicsTrainConfig(batch_size=2, clip_length=4, heldout_every=2, eval_every=1000, log_every=1,
                              pre_encode=True)
    net = AgentConfig(action_repeat=2, channels=(8, 8), hidden=16)
    agent = AgentTrainConfig(worlds=2, n_steps=4, batch_size=8, epochs=1, window=None, save_every=1, max_frames=12,
                             progress=False, starts="contexts", warmup=8)
    return dyn, net, agent


def _loop_args(tiny_world, carracing_data, tmp_path) -> dict:
    """run_loop's inputs: the tiny world, a copy of the small CarRacing data, a run folder, tiny trainers."""
    data, run = tmp_path / "data", tmp_path / "run"
    shutil.copytree(carracing_data, data)
    dyn, net, agent = _configs()
    return dict(world_file=tiny_world, data_dir=data, run_dir=run, dynamics_train=dyn, agent_net=net, agent_train=agent)


def _loop(rounds, **kw):
    from envs.loop.config import LoopConfig

    return LoopConfig(rounds=rounds, play_frames=30, explore=0.2, world_steps=3, world_warmup=1, agent_timesteps=16,
                      eval_episodes=1, world_episodes=1, max_frames=10, **kw)


@pytest.mark.slow
def test_two_rounds_feed_the_agents_real_episodes_to_the_world_and_resume_with_the_same_data(
        tiny_world, carracing_data, tmp_path, capsys):
    from envs.loop.run import run_loop
    from worldsim.data.dataset import EpisodeDataset
    from worldsim.training.budget import Budget, BudgetReached
    from worldsim.world import load_world

    args = _loop_args(tiny_world, carracing_data, tmp_path)
    data, run = args["data_dir"], args["run_dir"]
    with pytest.raises(BudgetReached):  # a spent budget stops the loop at its first check, saved
        run_loop(_loop(2), budget=Budget(deadline=0.0), **args)
    report = run_loop(_loop(2), **args)  # the same call continues
    assert [r["round"] for r in report["rounds"]] == [1, 2]
    first, second = report["rounds"]
    assert first["played_frames"] == 0 and first["world_file"] == str(tiny_world)  # no agent yet: nothing to play
    assert second["played_frames"] >= 30 and second["real_frames"] == first["real_frames"] + second["played_frames"]
    assert first["real_frames"] == EpisodeDataset(carracing_data).num_frames
    assert second["agent_decisions"] == 32  # round 2 continued round 1's agent (16 + 16 decisions)
    assert (run / "loop" / "loop.png").exists()
    assert json.loads((run / "loop" / "round-2" / "score.json").read_text())["deterministic"] is True
    capsys.readouterr()
    assert run_loop(_loop(2), **args)["rounds"] == report["rounds"]  # finished: nothing runs again
    assert capsys.readouterr().out.count("round | real frames") == 1  # the table once, not once a round
    ds = EpisodeDataset(data)
    mine = [s for s in ds.shards if (s.source.get("provenance") or {}).get("loop_round") == 2]
    assert mine and sum(e["length"] for s in mine for e in s.episodes) == second["played_frames"]
    assert all(s.source["policy"] == "agent" for s in mine)
    old, new = load_world(tiny_world), load_world(second["world_file"])
    assert any(not torch.equal(a, b) for a, b in zip(old.dit.state_dict().values(), new.dit.state_dict().values(), strict=True))
    assert [e["stage"] for e in new.meta["history"]][-1] == "dynamics"  # the fine-tune is in the world's ledger
    from envs.agent.network import load_agent

    hist = load_agent(second["agent_file"]).meta["history"]
    assert [e["stage"] for e in hist] == ["agent", "agent"] and hist[1]["init_from"] == first["agent_file"]

    # A round stopped inside its real play: its shards are removed and played again, the same.
    r2 = run / "loop" / "round-2"
    played = json.loads((r2 / "play.json").read_text())
    for phase in ("play", "world", "agent", "score"):
        (r2 / f"{phase}.json").unlink()
    shutil.rmtree(r2 / "world")
    shutil.rmtree(r2 / "agent")
    again = run_loop(_loop(2), **args)
    assert json.loads((r2 / "play.json").read_text())["shards"] == played["shards"]
    assert len(EpisodeDataset(data)) == len(ds)  # no duplicate episodes
    assert again["rounds"][1]["played_frames"] == second["played_frames"]

    # A fresh machine: the driver's data again, the loop folder as committed; round 2's episodes are rebuilt
    # by replaying its agent on its seeds, checked against the recorded checksums.
    from envs.loop.keep import keep

    kept = keep(run / "loop", tmp_path / "kept")  # what a session commits
    assert not [p for p in kept if "state" in p.name] and (tmp_path / "kept" / "round-2" / "tiny.safetensors").exists()
    for src, name in (("agent/agent_log.jsonl", "agent_log.jsonl"), ("world/dynamics_log.jsonl", "dynamics_log.jsonl")):
        assert (tmp_path / "kept" / "round-2" / name).read_bytes() == (run / "loop" / "round-2" / src).read_bytes()
    names = sorted(p.name for p in data.glob("*.safetensors"))
    shutil.rmtree(data)
    shutil.copytree(carracing_data, data)
    fresh = tmp_path / "fresh"
    shutil.copytree(tmp_path / "kept", fresh / "loop")
    rebuilt = run_loop(_loop(2), **dict(args, run_dir=fresh))
    assert sorted(p.name for p in data.glob("*.safetensors")) == names
    assert [r["real_return"] for r in rebuilt["rounds"]] == [r["real_return"] for r in again["rounds"]]

    # A rebuild that comes out otherwise (another CPU kind sampled another action): refused and removed by
    # default, kept on request with the difference recorded, and then taken as the round's data.
    r2 = fresh / "loop" / "round-2"
    record = json.loads((r2 / "play.json").read_text())
    for name in record["shards"]:
        (data / name).unlink()
    odd = sorted(record["shards"])[0]
    (r2 / "play.json").write_text(json.dumps(dict(record, shards=dict(record["shards"], **{odd: "0" * 16}))))
    with pytest.raises(ValueError, match="loop.rebuild=keep"):
        run_loop(_loop(2), **dict(args, run_dir=fresh))
    assert not [n for n in record["shards"] if (data / n).exists()]  # nothing half-checked left behind
    run_loop(_loop(2, rebuild="keep"), **dict(args, run_dir=fresh))
    assert json.loads((r2 / "rebuilt.json").read_text())["differ"] == [odd]
    assert all((data / n).exists() for n in record["shards"])
    for name in record["shards"]:  # the next fresh machine: the kept rebuild is what it must match
        (data / name).unlink()
    run_loop(_loop(2), **dict(args, run_dir=fresh))
    assert (tmp_path / "kept2" / "round-2" / "rebuilt.json") in keep(fresh / "loop", tmp_path / "kept2")


@pytest.mark.slow
def test_a_round_agent_that_drives_worse_on_the_selection_tracks_gives_way_to_the_one_it_started_from(
        tiny_world, carracing_data, tmp_path, monkeypatch):
    import envs.loop.run as loop_run
    from envs.loop.keep import round_files
    from envs.loop.select import selection_returns

    played = []

    def round_two_loses(agent_file, *args, **kw):  # the real selection episodes, round 2's agent marked down
        got = selection_returns(agent_file, *args, **kw)
        played.append(Path(agent_file).parent.name)
        return dict(got, mean=got["mean"] - 1e6) if Path(agent_file).parent.name == "round-2" else got

    monkeypatch.setattr(loop_run, "selection_returns", round_two_loses)
    args = _loop_args(tiny_world, carracing_data, tmp_path)
    report = loop_run.run_loop(_loop(3, world_from="start", select_episodes=2), **args)
    first, second, third = report["rounds"]
    folder = args["run_dir"] / "loop"
    assert "selection" not in first  # round 1 trained from scratch: nothing to compare it with
    sel2 = json.loads((folder / "round-2" / "select.json").read_text())
    assert sel2["kept"] == "round-1/tiny-agent.safetensors" and sel2["new"] == "round-2/tiny-agent.safetensors"
    assert second["agent_file"] == str(folder / "round-1" / "tiny-agent.safetensors")  # scored: the one kept
    assert 0 < sel2["frames"] <= 2 * 2 * 11  # two agents, two episodes of at most 10 steps (11 frames)
    assert second["real_frames"] == first["real_frames"] + second["played_frames"] + sel2["frames"]
    # Round 3 plays and trains on from the agent kept, and reads its selection returns instead of playing again.
    assert json.loads((folder / "round-3" / "play.json").read_text())["agent_file"] == sel2["kept"]
    assert json.loads((folder / "round-3" / "agent.json").read_text())["from"] == sel2["kept"]
    assert played == ["round-1", "round-2", "round-3"]
    sel3 = json.loads((folder / "round-3" / "select.json").read_text())
    assert sel3["kept"] == "round-3/tiny-agent.safetensors" and third["selection"]["kept"] == sel3["kept"]
    assert third["real_frames"] == second["real_frames"] + third["played_frames"] + sel3["frames"]
    # loop.world_from=start: each round's world is one fine-tune from the first world, not from the last round's.
    for k in (2, 3):
        assert json.loads((folder / f"round-{k}" / "world.json").read_text())["from"] == str(tiny_world)
    assert (Path("round-2/select.json"),) * 2 in round_files(folder)  # committed with the rounds


def test_loop_settings_for_the_start_world_and_the_selection_are_checked():
    from envs.loop.config import LoopConfig

    with pytest.raises(ValueError, match="world_from"):
        LoopConfig(world_from="first").validate()
    with pytest.raises(ValueError, match="select_episodes"):
        LoopConfig(select_episodes=-1).validate()


def test_a_loop_keeps_the_agent_it_started_from_so_a_file_written_over_later_changes_nothing(tmp_path):
    from envs.loop.keep import round_files
    from envs.loop.run import start_agent

    shipped, folder = tmp_path / "agent.safetensors", tmp_path / "run" / "loop"
    shipped.write_bytes(b"round 0")
    kept = start_agent(shipped, folder, started=False)
    assert kept == str(folder / "round-0" / "agent.safetensors") and Path(kept).read_bytes() == b"round 0"
    shipped.write_bytes(b"a newer agent shipped under the same name")
    assert start_agent(shipped, folder, started=True) == kept and Path(kept).read_bytes() == b"round 0"
    (folder / "loop.json").write_text("{}")
    assert (Path("round-0/agent.safetensors"),) * 2 in round_files(folder)  # committed with the rounds
    older = tmp_path / "older" / "loop"  # a loop started before copies were kept goes on as it began
    assert start_agent(shipped, older, started=True) == str(shipped) and not (older / "round-0").exists()


def test_round_records_name_a_shipped_world_relative_to_the_project_and_find_it_from_anywhere(tmp_path, monkeypatch):
    from envs.loop.run import _abs, _rel
    from worldsim.shipped import checkpoints_dir

    folder = tmp_path / "run" / "loop"
    (folder / "round-1").mkdir(parents=True)
    (folder / "round-1" / "w.safetensors").write_bytes(b"x")
    shipped = next(checkpoints_dir().glob("*.safetensors"))
    recorded = _rel(shipped, folder)  # the default world comes as the absolute path of this machine's clone
    assert recorded == f"checkpoints/{shipped.name}"
    assert _rel(folder / "round-1" / "w.safetensors", folder) == "round-1/w.safetensors"
    assert _rel(tmp_path / "elsewhere.safetensors", folder) == str(tmp_path / "elsewhere.safetensors")
    monkeypatch.chdir(tmp_path)  # a run started outside the project still finds both
    assert _abs(recorded, folder).resolve() == shipped.resolve()
    assert _abs("round-1/w.safetensors", folder) == folder / "round-1" / "w.safetensors"


def test_the_world_fine_tune_encodes_the_whole_dataset_only_when_its_steps_read_more_frames(carracing_data):
    from dataclasses import replace

    from envs.loop.run import _pre_encode
    from worldsim.data.dataset import EpisodeDataset

    dyn = _configs()[0]  # 2 clips of 4 frames a step
    frames = EpisodeDataset(carracing_data).num_frames
    few, many = replace(_loop(1), world_steps=1), replace(_loop(1), world_steps=frames // 8 + 1)
    assert not _pre_encode(dyn, few, carracing_data)  # 8 frames read: encoding every frame first costs more
    assert _pre_encode(dyn, many, carracing_data)
    assert not _pre_encode(replace(dyn, pre_encode=False), many, carracing_data)  # the user's no stands


def _round_world(tiny_world, tmp_path):
    """A round's fine-tuned world (a copy of the tiny world in round-1/) -> (its path, the dynamics settings, the
    world as loaded before a step changes it)."""
    from worldsim.world import load_world

    world = tmp_path / "round-1" / "tiny.safetensors"
    world.parent.mkdir()
    shutil.copy(tiny_world, world)
    return world, _configs()[0], load_world(world)


def test_the_heads_refit_trains_only_the_heads_of_the_fine_tuned_world_and_exports_over_it(
        tiny_world, carracing_data, tmp_path):
    from envs.loop.run import _refit_heads
    from worldsim.training.budget import Budget
    from worldsim.world import load_world

    world, dyn, before = _round_world(tiny_world, tmp_path)
    steps = _refit_heads(_loop(1, head_steps=2, head_lr=1e-2), dyn, world, carracing_data,
                         tmp_path / "round-1" / "heads", "cpu", Budget(), Budget())
    after = load_world(world)
    assert steps == 2 and after.meta["history"][-1]["train_only"] == "heads"
    heads = {n for n, _ in after.dit.named_parameters()
             if any(n.startswith(m) for m in ("reward_pool", "reward_head", "done_pool", "done_head"))}
    old, new = dict(before.dit.named_parameters()), dict(after.dit.named_parameters())
    assert heads and all(torch.equal(old[n], new[n]) for n in old if n not in heads)  # the frames are the same
    assert any(not torch.equal(old[n], new[n]) for n in heads)
    assert [torch.equal(a, b) for a, b in zip(before.vae.state_dict().values(), after.vae.state_dict().values(),
                                              strict=True)] == [True] * len(before.vae.state_dict())


def test_the_guidance_step_distils_the_fine_tuned_world_into_itself_and_exports_over_it(
        tiny_world, carracing_data, tmp_path):
    from envs.loop.run import _distill_guidance
    from worldsim.training.budget import Budget
    from worldsim.world import load_world

    world, dyn, before = _round_world(tiny_world, tmp_path)
    gdir = tmp_path / "round-1" / "guidance"
    cfg = _loop(1, guidance_steps=2, guidance_scale=3.0)
    steps = _distill_guidance(cfg, dyn, before, world, carracing_data, gdir, "tiny", "cpu", Budget(), Budget())
    after = load_world(world)
    last = after.meta["history"][-1]
    assert steps == 2 and last["steps"] == [0, 2] and last["distill_guidance"] == 3.0
    old, new = dict(before.dit.named_parameters()), dict(after.dit.named_parameters())
    assert any(not torch.equal(old[n], new[n]) for n in old)  # the frames' network learned
    assert after.sampler == before.sampler.override(guidance=1.0)  # one call per sampling step: the guidance is in it


def test_the_latent_reward_step_fits_the_round_world_on_all_the_data_and_writes_over_it(tiny_world, tmp_path):
    from test_latent_reward import _score_data

    from envs.loop.run import _fit_latent_reward
    from worldsim.training.budget import Budget
    from worldsim.world import load_world

    world, _, before = _round_world(tiny_world, tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    _score_data(data, before.dit.action_space)
    fitted = _fit_latent_reward(_loop(1, latent_reward_steps=40), world, data, Budget(), Budget())
    after = load_world(world)
    assert fitted["steps"] == 40 and after.dit.cfg.latent_reward == (-1.0, 0.0, 1.0)
    assert after.meta["history"][-1]["stage"] == "latent_reward"
    assert after.meta["latent_reward_report"]["return_real"] == fitted["return_real"]
    assert torch.equal(after.dit.patch_out.weight, before.dit.patch_out.weight)  # the frames are the same
    assert _fit_latent_reward(_loop(1, latent_reward_steps=40), world, data, Budget(), Budget(deadline=0.0)) == \
        {"steps": 0, "skipped": "its share of the round's minutes was spent"}


def test_a_loop_that_fits_latent_rewards_refuses_a_game_of_many_reward_values_before_any_round(
        tiny_world, carracing_data, tmp_path):
    from envs.loop.run import run_loop

    args = _loop_args(tiny_world, carracing_data, tmp_path)
    with pytest.raises(ValueError, match="keeps its reward head"):
        run_loop(_loop(1, latent_reward_steps=10), **args)
    assert not (args["run_dir"] / "loop" / "round-1").exists()


def test_the_heads_and_guidance_shares_count_in_the_rounds_minutes():
    from envs.loop.config import LoopConfig

    LoopConfig(head_steps=0, world_share=0.5, agent_share=0.5, head_share=0.2).validate()  # no heads: not counted
    with pytest.raises(ValueError, match="head_share"):
        LoopConfig(head_steps=10, world_share=0.5, agent_share=0.4, head_share=0.2).validate()
    LoopConfig(guidance_steps=0, world_share=0.5, agent_share=0.5, guidance_share=0.2).validate()
    with pytest.raises(ValueError, match="guidance_share"):
        LoopConfig(guidance_steps=10, world_share=0.5, agent_share=0.4, guidance_share=0.2).validate()
    with pytest.raises(ValueError, match="guidance_scale"):
        LoopConfig(guidance_steps=10, guidance_scale=0.0).validate()
    LoopConfig(latent_reward_steps=0, world_share=0.5, agent_share=0.5, latent_reward_share=0.2).validate()
    with pytest.raises(ValueError, match="latent_reward_share"):
        LoopConfig(latent_reward_steps=10, world_share=0.5, agent_share=0.48).validate()
    with pytest.raises(ValueError, match="latent_reward_steps"):
        LoopConfig(latent_reward_steps=-1).validate()


def test_a_heads_refit_to_the_sign_reward_makes_a_world_that_pays_minus_one_zero_or_one(
        tiny_world, carracing_data, tmp_path):
    import numpy as np

    from envs.loop.heads import main
    from worldsim.engine.simulator import Simulator
    from worldsim.world import load_world

    out = tmp_path / "sign.safetensors"
    args = [str(tiny_world), "--data", str(carracing_data), "--out", str(out), "--steps", "2", "--batch-size", "2",
            "--clip-length", "4", "--heldout-every", "2", "--reward-space", "sign", "--terminal-weight", "7",
            "--reward-weight", "2", "--negative-weight", "3"]
    assert main(args) == 0
    from worldsim.checkpoint import read_checkpoint

    meta = read_checkpoint(tmp_path / "sign-heads" / "dynamics_state.safetensors", "training-state")[0]
    train = meta["train"] if isinstance(meta["train"], dict) else json.loads(meta["train"])
    assert (train["terminal_weight"], train["reward_weight"], train["train_only"]) == (7.0, 2.0, "heads")
    assert train["reward_negative_weight"] == 3.0
    from worldsim.training.history import history_of

    assert history_of(meta)[-1]["reward_negative_weight"] == 3.0  # the file's ledger says how its head was fit
    world = load_world(out)
    assert world.dit.cfg.reward_space == "sign" and world.dit.reward_head[-1].out_features == 3
    old = load_world(tiny_world)
    assert torch.equal(world.dit.patch_out.weight, old.dit.patch_out.weight)  # the frames are the same
    from worldsim.data.dataset import EpisodeDataset

    ds = EpisodeDataset(carracing_data)
    clip = ds.read(ds.episodes()[0], 0, 2)
    sim = Simulator(world.dit, world.vae, 2, world.sampler, world.latent_mean, world.latent_std, seed=0)
    sim.prefill(np.stack([clip["frames"]] * 2), np.stack([clip["actions"]] * 2))
    rewards = torch.cat([sim.step(torch.as_tensor(clip["actions"][:1]).repeat(2, 1))[1] for _ in range(3)])
    assert set(rewards.tolist()) <= {-1.0, 0.0, 1.0} and rewards.shape == (6,)
    assert main(args) == 2  # the file is there now: not replaced without --overwrite


def test_a_heads_refit_can_switch_a_world_to_attention_pooled_heads(tiny_world, carracing_data, tmp_path):
    """``--head-pool attention``: the refitted world reads its frames through learned queries (they move from the
    mean they start at), its frames' network stays the same, and the loop's setting is checked."""
    from envs.loop.config import LoopConfig
    from envs.loop.heads import main
    from worldsim.world import load_world

    out = tmp_path / "attention.safetensors"
    assert main([str(tiny_world), "--data", str(carracing_data), "--out", str(out), "--steps", "3",
                 "--batch-size", "2", "--clip-length", "4", "--heldout-every", "2", "--lr", "1e-2",
                 "--head-pool", "attention"]) == 0
    world, old = load_world(out), load_world(tiny_world)
    assert old.dit.cfg.head_pool == "mean" and world.dit.cfg.head_pool == "attention"
    assert world.dit.reward_pool.query.abs().sum() > 0 and world.dit.done_pool.query.abs().sum() > 0
    assert torch.equal(world.dit.patch_out.weight, old.dit.patch_out.weight)
    with pytest.raises(ValueError, match="head_pool"):
        LoopConfig(head_pool="max").validate()
