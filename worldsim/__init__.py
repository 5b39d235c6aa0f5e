"""worldsim: learned, playable worlds from recorded Gymnasium gameplay — the core.

Models, diffusion maths, the engine (the sampler and its every rule), the data format, training, world files
and integrity. It imports nothing from ``envs`` (everything that faces Gymnasium), pygame or an RL library,
and nothing happens at import. The Gymnasium ids ``worldsim/<World>-v0`` are registered by ``import envs``.
"""

__version__ = "0.1.0"
