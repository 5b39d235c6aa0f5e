"""worldsim: learned, playable worlds from recorded Gymnasium gameplay."""

__version__ = "0.1.0"
