"""A pygame window that shows frames scaled up by an integer factor (render_mode="human", play.py)."""

from __future__ import annotations

import os

import numpy as np

INVISIBLE_DRIVERS = ("offscreen", "dummy")
"""SDL video drivers that draw into memory only: fine when asked for (tests), a trap when fallen back to."""


class NoDisplayError(RuntimeError):
    """pygame could not open a window (no display)."""


class Window:
    """Shows uint8 (H, W, 3) frames at ``scale`` x their size, with an optional panel of text lines."""

    def __init__(self, title: str, frame_size: tuple[int, int], scale: int = 8) -> None:
        import pygame

        os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
        self.pygame = pygame
        self.scale = scale
        h, w = frame_size
        try:
            pygame.display.init()
            driver = pygame.display.get_driver()
            asked = os.environ.get("SDL_VIDEODRIVER", "")
            if driver in INVISIBLE_DRIVERS and driver not in asked:
                # SDL fell back to a driver that draws nowhere: the window would be invisible.
                raise pygame.error(f"no display: SDL could only start its {driver!r} video driver, which shows "
                                   "nothing (set SDL_VIDEODRIVER to use it on purpose)")
            self.screen = pygame.display.set_mode((w * scale, h * scale))
        except pygame.error as e:
            pygame.display.quit()
            raise NoDisplayError(f"cannot open a window ({e})") from None
        pygame.font.init()
        pygame.display.set_caption(title)
        self.font = pygame.font.Font(None, max(18, 3 * scale))

    @property
    def size(self) -> tuple[int, int]:
        return self.screen.get_size()

    def blit_frames(self, frames: list[np.ndarray]) -> None:
        """Draw frames side by side (each (H, W, 3) uint8) scaled to fill the window height."""
        pg = self.pygame
        x = 0
        for frame in frames:
            surf = pg.surfarray.make_surface(np.ascontiguousarray(np.asarray(frame).transpose(1, 0, 2)))
            h, w = frame.shape[:2]
            surf = pg.transform.scale(surf, (w * self.scale, h * self.scale))
            self.screen.blit(surf, (x, 0))
            x += w * self.scale

    def text(self, lines: list[str], corner: tuple[int, int] = (8, 8)) -> None:
        """Draw lines of text on a translucent panel."""
        if not lines:
            return
        pg = self.pygame
        rendered = [self.font.render(line, True, (255, 255, 255)) for line in lines]
        width = max(r.get_width() for r in rendered) + 12
        height = sum(r.get_height() for r in rendered) + 8
        panel = pg.Surface((width, height), pg.SRCALPHA)
        panel.fill((0, 0, 0, 150))
        self.screen.blit(panel, corner)
        y = corner[1] + 4
        for r in rendered:
            self.screen.blit(r, (corner[0] + 6, y))
            y += r.get_height()

    def show(self, frames: list[np.ndarray] | np.ndarray, lines: list[str] | None = None) -> None:
        """Draw and flip: one frame or a list shown side by side, with optional text."""
        self.blit_frames(list(frames) if isinstance(frames, list) else [frames])
        self.text(lines or [])
        self.pygame.display.flip()
        self.pygame.event.pump()

    def resize_for(self, count: int, frame_size: tuple[int, int]) -> None:
        """Make room for ``count`` frames side by side."""
        h, w = frame_size
        self.screen = self.pygame.display.set_mode((count * w * self.scale, h * self.scale))

    def close(self) -> None:
        self.pygame.display.quit()
