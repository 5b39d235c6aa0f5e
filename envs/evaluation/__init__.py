"""``python train.py world=NAME stage=eval``: a world measured against its real game.

:mod:`.evaluate` runs the measures in turn and writes the report; each measure is a module of its own
(:mod:`.fidelity`, :mod:`.realism`, :mod:`.consistency`, :mod:`.long_horizon`, :mod:`.controllability`,
:mod:`.response`, :mod:`.heads`, :mod:`.second_driver`, :mod:`.track_memory`, :mod:`.key_objects`), the
real episodes they compare with come from :mod:`.real`, the goals from :mod:`.goals` and the figures from
:mod:`.plots`. The games' own object readers are in :mod:`envs.games.objects`.
"""
