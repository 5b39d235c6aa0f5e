"""worldsim: learned, playable worlds from recorded Gymnasium gameplay.

Importing it registers the Gymnasium ids ``worldsim/World-v0`` and ``worldsim/<World>-v0``
(see :mod:`worldsim.registration`); nothing else happens at import.
"""

__version__ = "0.1.0"

from .registration import register_envs as _register_envs  # noqa: E402

_register_envs()
