"""The pygame frontend: the play loop (game.py), its heads-up display (hud.py) and the window (window.py).
``play.py`` is its entry point; ``WorldModelEnv(render_mode="human")`` borrows the window."""
