import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from worldsim.data.dataset import ClipDataset, EpisodeDataset
from worldsim.data.episodes import DatasetError, Episode, EpisodeShard, write_shard
from worldsim.video import read_video, write_mp4

SOURCE = {"env_id": "Test-v0", "frame_size": 8, "fps": 10, "action_space": {"type": "Discrete", "n": 3, "start": 0}}


def episode(index: int, length: int) -> Episode:
    rng = np.random.default_rng(index)
    term = np.zeros(length, bool)
    term[-1] = True
    return Episode(
        frames=rng.integers(0, 256, (length, 8, 8, 3), dtype=np.uint8),
        actions=rng.integers(0, 3, length),
        rewards=rng.normal(size=length).astype(np.float32),
        terminated=term,
        truncated=np.zeros(length, bool),
        info={"index": index, "seed": index},
    )


def test_shard_round_trip(tmp_path):
    eps = [episode(0, 7), episode(1, 12)]
    write_shard(tmp_path / "a.safetensors", eps, SOURCE)
    shard = EpisodeShard(tmp_path / "a.safetensors")
    assert shard.source == SOURCE and len(shard) == 2
    for j, ep in enumerate(eps):
        back = shard.episode(j)
        for name, arr in ep.arrays().items():
            np.testing.assert_array_equal(getattr(back, name), arr)
        assert back.info["index"] == j and back.info["length"] == len(ep)
    part = shard.read(1, 3, 8)
    np.testing.assert_array_equal(part["frames"], eps[1].frames[3:8])
    assert [p.name for p in tmp_path.iterdir()] == ["a.safetensors"]  # no temporary left behind


def test_clips_are_contiguous_and_never_span_episodes(tmp_path):
    write_shard(tmp_path / "a.safetensors", [episode(0, 5), episode(1, 9)], SOURCE)
    write_shard(tmp_path / "b.safetensors", [episode(2, 3)], SOURCE)
    data = EpisodeDataset(tmp_path)
    assert len(data) == 3 and data.num_frames == 17 and data.indices() == {0, 1, 2}
    clips = ClipDataset(data, 4, split="all")
    assert len(clips) == (5 - 3) + (9 - 3)  # the 3-step episode yields none
    for i in range(len(clips)):
        ref, start = clips.items[i]
        item = clips[i]
        whole = data.episode(data.refs.index(ref))
        assert item["frames"].dtype == torch.uint8 and item["frames"].shape == (4, 8, 8, 3)
        np.testing.assert_array_equal(item["frames"].numpy(), whole.frames[start : start + 4])
        np.testing.assert_array_equal(item["actions"].numpy(), whole.actions[start : start + 4])
    with pytest.raises(DatasetError, match="no all episode has 20 steps"):
        ClipDataset(data, 20, split="all")


def test_terminal_weights_pick_the_clip_that_ends_on_a_termination(tmp_path):
    ended, cut = episode(0, 6), episode(1, 7)
    cut.terminated[:] = False  # truncated by a time limit: no terminal frame
    cut.truncated[-1] = True
    write_shard(tmp_path / "a.safetensors", [ended, cut], SOURCE)
    clips = ClipDataset(EpisodeDataset(tmp_path), 4, split="all")
    w = clips.terminal_weights(30.0)
    heavy = [clips.items[i] for i in range(len(clips)) if w[i] == 30.0]
    assert [(ref.index, start) for ref, start in heavy] == [(0, 2)]  # the last clip of the ended episode only
    assert (w == 1.0).sum() == len(clips) - 1
    assert bool(clips[clips.items.index(heavy[0])]["terminated"][-1])


def test_heldout_split_is_disjoint_and_stable(tmp_path):
    write_shard(tmp_path / "a.safetensors", [episode(i, 4) for i in range(20)], SOURCE)
    data = EpisodeDataset(tmp_path)
    train = {r.index for r in data.episodes("train", 10)}
    held = {r.index for r in data.episodes("heldout", 10)}
    assert held == {9, 19} and train.isdisjoint(held) and train | held == set(range(20))


def test_truncated_shard_is_refused_with_its_name(tmp_path):
    path = write_shard(tmp_path / "cut.safetensors", [episode(0, 6)], SOURCE)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DatasetError, match="cut.safetensors.*truncated"):
        EpisodeDataset(tmp_path)


def test_foreign_files_are_refused(tmp_path):
    save_file({"w": np.zeros(3, np.float32)}, str(tmp_path / "weights.safetensors"))
    with pytest.raises(DatasetError, match="weights.safetensors.*not a worldsim episode shard"):
        EpisodeDataset(tmp_path)
    (tmp_path / "weights.safetensors").write_text("hello, not a tensor file")
    with pytest.raises(DatasetError, match="weights.safetensors"):
        EpisodeDataset(tmp_path)


def test_mixed_sources_and_missing_folder_are_refused(tmp_path):
    write_shard(tmp_path / "a.safetensors", [episode(0, 4)], SOURCE)
    write_shard(tmp_path / "b.safetensors", [episode(1, 4)], dict(SOURCE, env_id="Other-v0"))
    with pytest.raises(DatasetError, match="one dataset folder holds one source"):
        EpisodeDataset(tmp_path)
    with pytest.raises(DatasetError, match="stage=collect"):
        EpisodeDataset(tmp_path / "nope")


def test_bad_episodes_are_refused():
    ep = episode(0, 4)
    with pytest.raises(ValueError, match="rewards has length 3"):
        Episode(ep.frames, ep.actions, ep.rewards[:3], ep.terminated, ep.truncated)
    with pytest.raises(ValueError, match="uint8"):
        Episode(ep.frames.astype(np.float32), ep.actions, ep.rewards, ep.terminated, ep.truncated)


def test_episode_exports_to_a_playable_mp4(tmp_path):
    ep = episode(0, 10)
    path = write_mp4(tmp_path / "ep.mp4", ep.frames, fps=10, scale=4)
    video = read_video(path)
    assert video.shape == (10, 32, 32, 3) and video.dtype == np.uint8
