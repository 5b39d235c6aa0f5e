"""The shared training loop keeps what was trained when it is stopped, even by a second signal during the save."""

import os
import signal
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from worldsim.signals import signals_deferred
from worldsim.training.ema import EMA
from worldsim.training.loop import run_training


@pytest.fixture
def sigterm_interrupts():
    """As train.py: SIGTERM stops like Ctrl-C."""

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    old = signal.signal(signal.SIGTERM, handler)
    yield
    signal.signal(signal.SIGTERM, old)


def _loop(tmp_path, checkpoint, stop_at=3):
    torch.manual_seed(0)
    model = nn.Linear(2, 1)
    ema = EMA(model, 0.9)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    cfg = SimpleNamespace(lr=0.1, warmup=1, steps=100, grad_clip=1.0, log_every=1, eval_every=50)

    def batches():
        for i in range(10**6):
            if i == stop_at:
                raise KeyboardInterrupt("Ctrl-C")  # pressed while the next batch is read
            yield torch.ones(4, 2)

    def loss_fn(net, x):
        return net(x).pow(2).mean(), {}, len(x)

    return run_training(model, ema, opt, cfg, 0, batches(), loss_fn, lambda s: ({}, {}), checkpoint,
                        tmp_path / "log.jsonl", tmp_path / "state.safetensors")


def test_a_second_signal_during_the_interrupt_save_waits_for_it(tmp_path, capsys, sigterm_interrupts):
    written = []

    def checkpoint(step, stats):
        os.kill(os.getpid(), signal.SIGTERM)  # the user presses again while the save runs
        for _ in range(1000):  # let the signal be handled mid-save
            pass
        (tmp_path / "state.safetensors").write_text(str(step))
        written.append(step)

    with pytest.raises(KeyboardInterrupt):
        _loop(tmp_path, checkpoint)
    out = capsys.readouterr()
    assert written == [3] and (tmp_path / "state.safetensors").read_text() == "3"
    assert "saved step 3" in out.out and "while saving" in out.err


def test_a_failed_save_is_not_reported_as_saved(tmp_path, capsys):
    def checkpoint(step, stats):
        raise OSError("No space left on device")

    with pytest.raises(OSError):
        _loop(tmp_path, checkpoint)
    out = capsys.readouterr().out
    assert "could NOT save step 3" in out and "saved step" not in out


def test_signals_deferred_raises_after_the_block(sigterm_interrupts):
    done = []
    with pytest.raises(KeyboardInterrupt):
        with signals_deferred("testing"):
            os.kill(os.getpid(), signal.SIGTERM)
            done.append(1)
    assert done == [1]
    assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL  # the previous handler is back
