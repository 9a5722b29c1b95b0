"""SIGINT and SIGTERM as a request to stop at the next safe point, instead of an exception raised
wherever the main thread happens to be.

Python's default SIGINT handler raises KeyboardInterrupt at the next bytecode: inside JAX's
lowering or a callback from XLA's compiler (twice a segmentation fault), or inside orbax's wait
for a checkpoint save (which then deletes the step being saved and logs its traceback); SIGTERM
ends the process at once. Inside `deferred()` a handler only records the signal. The step loop
(`loop.run`) asks `received()` before its first step and after every step: it checkpoints the
current step, waits for the save and raises `Interrupted`. Between phases, `check` raises it where
the stages call it (`pipeline.run` before each retraining, the compilation of a step, the
selection phase). The CLI prints `Interrupted` as one line and exits 128 + the signal number (130
for SIGINT, 143 for SIGTERM).

A second signal does not wait for anything: `on_second` runs (the CLI prints the line and exits at
once), or without it `Interrupted` is raised on the spot. A checkpoint save abandoned that way is
never seen: orbax writes a step into a temporary directory renamed when complete, and a
`Checkpointer` deletes such leftovers when it opens the directory.

Library use (a notebook) gets the same by wrapping a stage, `with signals.deferred():
search.run(config, workdir)`; without it nothing changes (Ctrl-C raises KeyboardInterrupt where
it lands). Leaving the outermost `deferred()` restores the previous handlers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """A run stopped by a signal, at a point where its files are consistent.

    A BaseException, as KeyboardInterrupt: an `except Exception` on the way up (a figure that
    may fail, orbax's thread clean-up) must not swallow a request to stop.

    Attributes:
      signum: the signal (the first one, if a second forced the exit).
      where: where the run stood, e.g. "at search step 37 of 120 (epoch 4 of 10)".
      workdir: the workdir of the stage that stopped (a `dnas run`'s retraining has its own).
      step, total: the step checkpointed and the stage's last step, when a step loop stopped.
      saved: True when the checkpoint of `step` is on disk, False when a second signal abandoned
        its save (a resume starts from the latest complete one), None when no loop was running.
    """

    def __init__(
        self, signum: int, where: str = "", workdir: str | None = None, *,
        step: int | None = None, total: int | None = None, saved: bool | None = None,
    ):  # fmt: skip
        super().__init__(signum, where, workdir, step, total, saved)
        self.signum, self.where, self.workdir = int(signum), where, workdir
        self.step, self.total, self.saved = step, total, saved

    @property
    def signal_name(self) -> str:
        try:
            return signal.Signals(self.signum).name
        except ValueError:
            return f"signal {self.signum}"

    @property
    def exit_code(self) -> int:
        """The shell's convention for a process ended by a signal: 128 + its number."""
        return 128 + self.signum

    def replace(self, **changes: Any) -> Interrupted:
        fields = {k: getattr(self, k) for k in ("where", "workdir", "step", "total", "saved")}
        return Interrupted(self.signum, **(fields | changes))

    def describe(self, root: str | None = None) -> str:
        """One line: the signal, where the run stood, what is on disk. The workdir is named
        unless it is `root` (relative to `root` when inside it)."""
        text = f"interrupted by {self.signal_name}"
        if self.where:
            text += f" {self.where}"
        if self.workdir:
            workdir = os.path.abspath(self.workdir)
            if root is None:
                text += f" in {workdir}"
            elif workdir != os.path.abspath(root):
                relative = os.path.relpath(workdir, os.path.abspath(root))
                text += f" in {workdir if relative.startswith('..') else relative + os.sep}"
        if self.saved is True:
            text += "; checkpoint saved"
        elif self.saved is False:
            text += (
                "; stopped at once by a second signal (a checkpoint save in progress is "
                "abandoned: a resume starts from the latest complete one)"
            )
        return text

    def __str__(self) -> str:
        return self.describe()


@dataclasses.dataclass
class _Handling:
    on_second: Callable[[Interrupted], Any] | None
    previous: dict[int, Any] = dataclasses.field(default_factory=dict)
    signum: int | None = None
    # What a second signal reports while the loop waits for its checkpoint save.
    abandoned: Interrupted | None = None


_handling: _Handling | None = None


def _handle(signum: int, frame: Any) -> None:
    handling = _handling
    if handling is None:  # restored meanwhile; cannot happen in the main thread
        return
    if handling.signum is None:
        handling.signum = signum
        return
    stopped = handling.abandoned or Interrupted(
        handling.signum, "(a second signal: stopped at once)"
    )
    if handling.on_second is not None:
        handling.on_second(stopped)
    raise stopped


@contextlib.contextmanager
def deferred(on_second: Callable[[Interrupted], Any] | None = None) -> Iterator[None]:
    """SIGINT and SIGTERM only recorded (`received`) inside the block; a second one calls
    `on_second(Interrupted)` (which may exit the process) and, if it returns, raises it.

    Nested blocks share the outermost's handler (and its `on_second`); outside the main thread,
    where Python cannot install signal handlers, the block changes nothing. On leaving the
    outermost block the previous handlers come back and a recorded signal is forgotten.
    """
    global _handling
    if _handling is not None or threading.current_thread() is not threading.main_thread():
        yield
        return
    handling = _Handling(on_second)
    _handling = handling
    try:
        for signum in SIGNALS:
            handling.previous[signum] = signal.signal(signum, _handle)
        yield
    finally:
        for signum, previous in handling.previous.items():
            # None: a handler installed outside Python, which cannot be put back; the default.
            signal.signal(signum, signal.SIG_DFL if previous is None else previous)
        _handling = None


def received() -> int | None:
    """The signal recorded inside `deferred()`, or None."""
    return None if _handling is None else _handling.signum


def check(where: str, workdir: str | None = None) -> None:
    """Raises `Interrupted` (saying the run stopped `where`) if a signal was recorded."""
    signum = received()
    if signum is not None:
        raise Interrupted(signum, where, workdir)


@contextlib.contextmanager
def saving(abandoned: Interrupted) -> Iterator[None]:
    """While the block waits for a checkpoint save, a second signal reports `abandoned`."""
    handling = _handling
    if handling is None:
        yield
        return
    handling.abandoned = abandoned
    try:
        yield
    finally:
        handling.abandoned = None


__all__ = ["SIGNALS", "Interrupted", "check", "deferred", "received", "saving"]
