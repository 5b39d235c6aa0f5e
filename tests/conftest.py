import os

import pytest

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")


@pytest.fixture(scope="session")
def carracing_data(tmp_path_factory):
    """A small real CarRacing dataset (driving policy), collected once per session."""
    from envs.collect import CollectConfig, collect
    from envs.source import WorldConfig

    out = tmp_path_factory.mktemp("carracing")
    world = WorldConfig(max_episode_steps=24)
    collect(world, CollectConfig(out=str(out), frames=100, workers=2, episodes_per_shard=2, progress=False))
    return out
