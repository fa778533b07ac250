"""Liveness of the processing loop, and a watchdog thread that ends a worker that cannot.

A worker that is alive but does no work is the worst outcome: no supervisor restarts it.
Two things make a worker hang without this module: a Kafka client call that blocks past its
own timeout (librdkafka's ``send_offsets_to_transaction`` after a broker restart fenced the
consumer), and SIGTERM, whose Python handler runs only when the main thread gets back to
the interpreter, which it does not while blocked in a client call.

So the watchdog runs on a thread of its own and

- hears SIGTERM/SIGINT through ``signal.set_wakeup_fd`` (written by the C-level handler, even
  while the main thread is blocked), sets the stop event, and hard-exits
  (``EXIT_STOP_TIMEOUT``) if the main loop has not returned ``stop_grace_s`` later;
- hard-exits (``EXIT_STALLED``) when a guarded client call (``with watchdog.deadline(...)``)
  runs ``call_grace_s`` past the timeout it was given (seen within a second of then).

The supervisor (compose's restart policy, Kubernetes, systemd) restarts the process; the
exactly-once runtime makes a restart safe at any point (docs/exactly-once.md).

``Liveness`` is what ``/healthz`` on the metrics port answers: false when the loop has not
come round for ``timeout_s``, or when input is waiting and nothing was committed for
``timeout_s``.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

# Exit codes of a hard exit (0 is a clean stop, 1 an uncaught error, 2 a MemstreamError).
EXIT_STALLED = 3
EXIT_STOP_TIMEOUT = 4
# The watchdog thread sleeps at most this long between looks at the guarded calls.
_MAX_SLEEP_S = 1.0


@dataclass(frozen=True)
class LivenessReport:
    """What ``/healthz`` says."""

    live: bool
    reason: str
    loop_age_s: float
    progress_age_s: float
    backlog: int

    def as_dict(self) -> dict[str, Any]:
        """JSON body of ``/healthz``."""
        return {
            "live": self.live,
            "reason": self.reason,
            "loop_age_s": round(self.loop_age_s, 1),
            "progress_age_s": round(self.progress_age_s, 1),
            "backlog": self.backlog,
        }


class Liveness:
    """When the processing loop last came round and last made progress."""

    def __init__(self, timeout_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.timeout_s = timeout_s
        self._clock = clock
        now = clock()
        self._loop = now
        self._progress = now
        self._backlog = 0
        self._in_hand = False
        self._stopped = False

    def beat(self, *, in_hand: bool) -> None:
        """The loop came round; ``in_hand``: it holds records it has not committed yet."""
        now = self._clock()
        self._loop = now
        self._in_hand = in_hand
        if not in_hand and self._backlog == 0:
            self._progress = now  # nothing waiting: idle is progress

    def call_returned(self) -> None:
        """A guarded client call returned: the loop is moving, though nothing committed yet.

        The watchdog bounds each blocking call on its own (timeout + grace), and one batch
        makes several in a row (flush, send_offsets, commit); after a broker restart each may
        run to its bound, and together they are not a stuck loop.
        """
        self._loop = self._clock()

    def progress(self) -> None:
        """A batch committed."""
        now = self._clock()
        self._progress = self._loop = now
        self._in_hand = False

    def set_backlog(self, records: int) -> None:
        """Records behind the end of the inputs (the consumer lag)."""
        self._backlog = max(0, records)

    def stopped(self) -> None:
        """The loop ended: not live any more."""
        self._stopped = True

    def report(self) -> LivenessReport:
        """Live unless stopped, stuck inside one iteration, or not committing with input
        waiting, for longer than ``timeout_s``."""
        now = self._clock()
        loop_age, progress_age = now - self._loop, now - self._progress
        waiting = self._in_hand or self._backlog > 0
        if self._stopped:
            reason = "the processing loop has stopped"
        elif loop_age > self.timeout_s:
            reason = f"the processing loop is stuck (no iteration for {loop_age:.0f}s)"
        elif waiting and progress_age > self.timeout_s:
            reason = (
                f"input waiting ({self._backlog} records behind) and nothing committed "
                f"for {progress_age:.0f}s"
            )
        else:
            reason = ""
        return LivenessReport(not reason, reason or "ok", loop_age, progress_age, self._backlog)


class Watchdog:
    """A daemon thread that ends the process when it cannot end itself (see module doc)."""

    def __init__(
        self,
        stop: threading.Event,
        *,
        stop_grace_s: float,
        call_grace_s: float,
        exit: Callable[[int], None] = os._exit,  # noqa: A002 - tests pass a fake
    ) -> None:
        self.stop = stop
        self.stop_grace_s = stop_grace_s
        self.call_grace_s = call_grace_s
        self._exit = exit
        # Reentrant: the signal handler runs on the main thread, which may hold it.
        self._lock = threading.RLock()
        self._calls: dict[int, tuple[str, float]] = {}
        self._next = 0
        self._stop_deadline: float | None = None
        self._done = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._previous_fd: int | None = None
        self._thread = threading.Thread(target=self._watch, name="memstream-watchdog",
                                        daemon=True)

    # -- set-up ----------------------------------------------------------------------------
    def start(self, *, signals: bool = True) -> Watchdog:
        """Start watching; with ``signals`` (main thread only) SIGTERM/SIGINT set ``stop``
        even while the main thread is blocked in a client call."""
        if signals:
            self._previous_fd = signal.set_wakeup_fd(
                self._wake_w.fileno(), warn_on_full_buffer=False
            )

            def handler(signum: int, _frame: object) -> None:
                self.request_stop(f"signal {signum}")

            signal.signal(signal.SIGTERM, handler)
            signal.signal(signal.SIGINT, handler)
        self._thread.start()
        return self

    def close(self) -> None:
        """The main loop returned: stop watching."""
        self._done.set()
        self._poke()
        if self._previous_fd is not None:
            signal.set_wakeup_fd(self._previous_fd)
            self._previous_fd = None
        self._thread.join(5)
        self._wake_r.close()
        self._wake_w.close()

    def request_stop(self, why: str) -> None:
        """Ask the loop to stop after its current batch; hard-exit if it has not within the
        grace period."""
        with self._lock:
            if self._stop_deadline is None:
                self._stop_deadline = time.monotonic() + self.stop_grace_s
                logger.info("%s: stopping after the current batch (at most %.0fs)",
                            why, self.stop_grace_s)
        self.stop.set()
        self._poke()

    @contextmanager
    def deadline(self, call: str, timeout_s: float) -> Iterator[None]:
        """Guard a blocking client call given ``timeout_s``: if it has not returned
        ``call_grace_s`` after that, the process hard-exits (``EXIT_STALLED``)."""
        with self._lock:
            token = self._next
            self._next += 1
            self._calls[token] = (call, time.monotonic() + timeout_s + self.call_grace_s)
        if timeout_s + self.call_grace_s < _MAX_SLEEP_S:
            # The thread looks at least every _MAX_SLEEP_S: only a deadline sooner than that
            # needs it woken (py-spy counted 3 % of the worker's samples in it when every
            # guarded call woke it).
            self._poke()
        try:
            yield
        finally:
            with self._lock:
                self._calls.pop(token, None)

    # -- the thread ------------------------------------------------------------------------
    def _poke(self) -> None:
        try:
            self._wake_w.send(b"\x00")
        except OSError:
            pass  # buffer full or closed: the thread wakes up anyway

    def _watch(self) -> None:
        while not self._done.is_set():
            wait = self._next_deadline() - time.monotonic()
            sleep = max(0.0, min(wait, _MAX_SLEEP_S))
            readable, _, _ = select.select([self._wake_r], [], [], sleep)
            if readable:
                self._drain_wakeups()
            if self._done.is_set():
                return
            self._check(time.monotonic())

    def _drain_wakeups(self) -> None:
        try:
            data = self._wake_r.recv(4096)
        except OSError:
            return
        for signum in data:
            if signum in (signal.SIGTERM, signal.SIGINT):
                self.request_stop(f"signal {signum}")

    def _next_deadline(self) -> float:
        with self._lock:
            times = [at for _call, at in self._calls.values()]
            if self._stop_deadline is not None:
                times.append(self._stop_deadline)
        return min(times, default=time.monotonic() + _MAX_SLEEP_S)

    def _check(self, now: float) -> None:
        with self._lock:
            overdue = [call for call, at in self._calls.values() if now >= at]
            stop_overdue = self._stop_deadline is not None and now >= self._stop_deadline
        if overdue:
            logger.critical(
                "%s has not returned %.0fs after its timeout: exiting (code %d) for the "
                "supervisor to restart the worker", overdue[0], self.call_grace_s, EXIT_STALLED,
            )
            self._hard_exit(EXIT_STALLED)
        elif stop_overdue:
            logger.critical(
                "the worker did not stop within %.0fs of being asked: exiting (code %d)",
                self.stop_grace_s, EXIT_STOP_TIMEOUT,
            )
            self._hard_exit(EXIT_STOP_TIMEOUT)

    def _hard_exit(self, code: int) -> None:
        for handler in logging.getLogger().handlers:
            try:
                handler.flush()
            except Exception:  # noqa: BLE001, S110 - exiting anyway
                pass
        self._done.set()
        self._exit(code)
