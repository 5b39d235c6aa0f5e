"""Per-game readers of key objects from 64x64 frames (CarRacing's road, Pong's ball and paddles, Boxing's
boxers): used by ``stage=eval`` and by the tests of shipped worlds."""
