"""Everything of worldsim that faces Gymnasium, one sub-package per concern:

- ``games``      the source games: the real envs behind worlds, their keymaps, data drivers and object readers
- ``worldenv``   a world file as a Gymnasium env and a natively batched vector env
- ``recording``  collection of real episodes and recording of any env's episodes as datasets
- ``evaluation`` a world measured against its real game (``stage=eval``), one measure a module
- ``agent``      an RL agent trained in a world and scored in the real game, with its one observation view
- ``play``       the pygame frontend of ``play.py``

Importing it registers the Gymnasium ids ``worldsim/World-v0`` and ``worldsim/<World>-v0`` (one per shipped
world; :mod:`envs.registration`), as Gymnasium's packages of envs do (``gymnasium.register_envs(envs)``).
"""

from envs.registration import register_envs as _register_envs

_register_envs()
