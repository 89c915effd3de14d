"""Ctrl-C (SIGINT) and SIGTERM (schedulers' pre-emption) end a run cleanly at the next step boundary.

The first signal only raises a flag: the step in flight finishes (a rollout cannot be cut in half and
resumed), Trainer saves a checkpoint (``guard.save_on_interrupt``), and the run exits with the command
that resumes it. A second signal interrupts at once, without a checkpoint. With several ranks the
flag is all-reduced every step, so every rank stops at the same step (a rank that stopped alone
would hang the others at the next collective).
"""

from __future__ import annotations

import logging
import signal
from contextlib import contextmanager

from transformers import TrainerCallback

log = logging.getLogger("mmr1.reliability")

EXIT_CODES: dict[int, int] = {signal.SIGINT: 130, signal.SIGTERM: 143}


class InterruptCallback(TrainerCallback):
    def __init__(self, save: bool = True):
        self.save = save
        self.signum: int | None = None
        self.stopped_at: int | None = None

    @property
    def fired(self) -> bool:
        return self.stopped_at is not None

    def _handler(self, signum, frame):
        if self.signum is not None:
            log.warning("second %s: stopping now, without a checkpoint", signal.Signals(signum).name)
            signal.signal(signum, signal.SIG_DFL)
            raise KeyboardInterrupt
        self.signum = signum
        log.warning("%s received: finishing this step%s, then stopping (send it again to stop at once)",
                    signal.Signals(signum).name, " and saving a checkpoint" if self.save else "")

    @contextmanager
    def installed(self):
        """Handlers for the duration of training; the previous ones are put back afterwards."""
        old = {}
        try:
            for sig in EXIT_CODES:
                old[sig] = signal.signal(sig, self._handler)
        except ValueError:  # not the main thread (e.g. a notebook worker): Ctrl-C keeps its default
            old = {}
        try:
            yield self
        finally:
            for sig, h in old.items():
                signal.signal(sig, h)

    def _agreed(self, args) -> bool:
        flag = self.signum is not None
        try:
            import torch
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                t = torch.tensor([1.0 if flag else 0.0], device=args.device)
                dist.all_reduce(t, op=dist.ReduceOp.MAX)
                flag = bool(t.item())
        except ImportError:  # pragma: no cover
            pass
        return flag

    def on_step_end(self, args, state, control, **kwargs):
        if self.stopped_at is None and self._agreed(args):
            self.stopped_at = state.global_step
            if self.signum is None:
                self.signum = signal.SIGINT  # another rank got it
            control.should_training_stop = True
            control.should_save = self.save and state.global_step > 0

    def exit_code(self) -> int:
        return 130 if self.signum is None else EXIT_CODES.get(self.signum, 130)
