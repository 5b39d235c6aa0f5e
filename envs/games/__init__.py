"""The source games: the real envs behind worlds (``source``), each game's env, keymap and data driver, and
``objects``, the readers of a game's key objects from its frames."""
