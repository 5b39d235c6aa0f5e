"""The pygame frontend: the play loop (game.py) and its heads-up display (hud.py), shown in the pygame window
of :mod:`envs.window` (which ``WorldModelEnv(render_mode="human")`` uses too). ``play.py`` is its entry point."""
