"""Ad-hoc: the shipped-Boxing key test's measure on any world files (run from the project root): how far six steps
of right against left, and of down against up, from ``reset(seed=0)`` move the white boxer apart (px; the test asks
for more than 4 each), and the both-boxers rate over 120 random keys.
``python checkpoints/wip/boxing-loop3/keys.py FILE [FILE ...]``"""

import sys


def main(paths: list[str]) -> None:
    import numpy as np

    sys.path.insert(0, "tests")
    from test_shipped_boxing import _key_moves

    from envs.games.objects.boxing import boxer_rate
    from envs.worldenv.env import WorldModelEnv

    for p in paths:
        env = WorldModelEnv(p, device="cpu")
        m = _key_moves(env)
        env.reset(seed=1)
        frames = np.stack([env.step(int(a))[0] for a in np.random.default_rng(0).integers(0, 18, 120)])
        print(p, "right-left", m["right"][1] - m["left"][1], "down-up", m["down"][0] - m["up"][0],
              "boxer_rate", boxer_rate(frames), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
