"""Keymaps: which held keys give which action, stored as plain data.

Keys are pygame key names ("left", "space", "a", "1"); they are turned into pygame
key codes only when pygame is in use. A binding of several keys is a combination
that fires only when all of them are held; the most specific binding wins.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Keymap:
    name: str
    bindings: list[tuple[tuple[str, ...], Any]] = field(default_factory=list)
    """(key names, action) pairs; actions are JSON-able (int for Discrete, lists otherwise)."""
    default: Any = 0
    """The action when no binding matches (no key held)."""

    def action_for(self, pressed: Iterable[str]) -> Any:
        """The action for a set of held key names."""
        held = set(pressed)
        best, best_n = self.default, 0
        for keys, action in self.bindings:
            if len(keys) > best_n and held.issuperset(keys):
                best, best_n = action, len(keys)
        return best

    def keys_to_action(self) -> dict[tuple[int, ...], Any]:
        """The mapping ``gymnasium.utils.play.play`` expects: sorted pygame key codes -> action."""
        import pygame

        if not pygame.get_init():
            pygame.init()  # key names resolve to codes only once pygame is initialised
        return {tuple(sorted(pygame.key.key_code(k) for k in keys)): action for keys, action in self.bindings}

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "bindings": [[list(k), a] for k, a in self.bindings], "default": self.default}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Keymap:
        return cls(d["name"], [(tuple(k), a) for k, a in d["bindings"]], d.get("default", 0))


# ALE action meanings are made of these words; each becomes one key.
_ALE_KEYS = {"UP": "up", "DOWN": "down", "LEFT": "left", "RIGHT": "right", "FIRE": "space"}


def atari_keymap(name: str, meanings: list[str]) -> Keymap:
    """Arrows and space from ALE action meanings, combinations included (e.g. UPRIGHTFIRE)."""
    bindings = []
    for action, meaning in enumerate(meanings):
        rest, keys = meaning, []
        for word, key in _ALE_KEYS.items():
            if word in rest:
                keys.append(key)
                rest = rest.replace(word, "")
        if keys and not rest:
            bindings.append((tuple(sorted(keys)), action))
    return Keymap(name, bindings, default=meanings.index("NOOP") if "NOOP" in meanings else 0)


def number_keymap(name: str, n: int) -> Keymap:
    """Generic Discrete(n): number keys 1..9 pick actions 1..9; no key is action 0."""
    return Keymap(name, [((str(a),), a) for a in range(1, min(n, 10))], default=0)
