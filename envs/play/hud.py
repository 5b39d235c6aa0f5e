"""The heads-up display: achieved frame rate (measured, never assumed) and the lines shown over the game."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field


class FpsMeter:
    """Achieved frames per second over the last ``n`` frames."""

    def __init__(self, n: int = 30) -> None:
        self.stamps: deque[float] = deque(maxlen=n)

    def tick(self) -> None:
        self.stamps.append(time.perf_counter())

    def reset(self) -> None:
        self.stamps.clear()

    @property
    def fps(self) -> float:
        if len(self.stamps) < 2:
            return 0.0
        return (len(self.stamps) - 1) / max(self.stamps[-1] - self.stamps[0], 1e-9)


@dataclass
class HudState:
    """What the HUD shows; the game loop fills it every frame."""

    world: str = ""
    target_fps: float = 30.0
    fps: float = 0.0
    model_ms: float | None = None
    step: int = 0
    action: str = "-"
    reward: float | None = None
    sampling_steps: int | None = None
    guidance: float | None = None
    device: str = "cpu"
    paused: bool = False
    recording: bool = False
    notes: list[str] = field(default_factory=list)


def hud_lines(s: HudState) -> list[str]:
    """The HUD text. A world that cannot keep up shows its real rate next to the target (no silent slow motion)."""
    slow = s.fps and s.fps < 0.95 * s.target_fps
    lines = [f"{s.world}  {s.fps:4.1f} / {s.target_fps:.0f} fps" + ("  (slower than real time)" if slow else "")]
    if s.model_ms is not None:
        lines.append(f"model {s.model_ms:5.1f} ms/frame on {s.device}")
    lines.append(f"step {s.step}  action {s.action}" + (f"  reward {s.reward:+.2f}" if s.reward is not None else ""))
    if s.sampling_steps is not None:
        lines.append(f"sampling steps {s.sampling_steps} [ ]   guidance {s.guidance:.1f} - =")
    flags = [f for f, on in (("PAUSED", s.paused), ("REC", s.recording)) if on]
    if flags:
        lines.append("  ".join(flags))
    lines.append("Esc quit  R reset  P pause  H hud  F9 record  F12 screenshot")
    return lines + list(s.notes)
