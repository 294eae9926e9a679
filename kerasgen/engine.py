"""The batching engine behind ``kerasgen serve``: many streams, one batched loop.

Every sample a request asks for is a ``Stream``. ``Engine.submit`` puts streams
in a bounded queue (``Busy`` when it is full); one engine thread runs the
sampler's rows (``kerasgen.sampler.Rows``) chunk after chunk. At each chunk
boundary it admits waiting streams into free rows (continuous batching: they
start while the others go on), runs one chunk of every row on the smallest
batch that holds them, hands each stream its new text through its
``deliver`` callback (called on the engine thread), and frees the rows whose
streams finished, hit a stop text or were cancelled; the last rows in use are
then packed into the freed ones, so the batch shrinks as streams end.

Who waits where: a request waits in the queue for a row; a row waits for
nothing (it runs in every chunk while its stream lasts); a cancelled stream
(its client went away) leaves at the next chunk boundary.
"""

from __future__ import annotations

import collections
import logging
import threading
from dataclasses import dataclass, field

from kerasgen import checks
from kerasgen.sampling import SamplingOptions
from kerasgen.streams import StopTexts

LOG = logging.getLogger("kerasgen.server")
# A server's limits by default: rows generated at once (at most MAX_ROWS), samples that
# may wait for a row, and the most tokens one request may ask for.
SERVE_DEFAULTS = {"max_batch": 32, "max_queue": 256, "max_tokens": 4096}
MAX_ROWS = 1024
FINISH_LENGTH, FINISH_STOP, FINISH_CANCELLED, FINISH_ERROR = "length", "stop", "cancelled", "error"


class Busy(RuntimeError):
    """Every row is taken and the queue is full (or the engine is stopping): try later."""


@dataclass(eq=False)
class Stream:
    """One sample to generate: ``n`` tokens after ``prime`` with ``options``, as sample
    ``index`` of its request (what ``kerasgen sample --num_samples`` calls row ``index``),
    ending just before the first of ``stop``.

    ``deliver(text, finish)`` gets each new piece of text (``finish`` None) and then
    the last piece with why it ended (``length``, ``stop``, ``cancelled`` or ``error``).
    """

    prime: str
    n: int
    options: SamplingOptions
    deliver: object
    index: int = 0
    stop: tuple = ()
    made: int = 0  # tokens generated so far
    cancelled: threading.Event = field(default_factory=threading.Event)

    def cancel(self) -> None:
        """Stop generating (the client went away); the row frees at the next chunk."""
        self.cancelled.set()


class Engine:
    """The thread that runs the rows of ``model`` (a ``TrainedModel``) for streams.

    ``max_batch``: rows at once; ``max_queue``: streams that may wait for a row.
    """

    def __init__(self, model, max_batch: int = 32, max_queue: int = 256):
        from kerasgen.sampler import Rows

        checks.in_range("max_batch", max_batch, 1, MAX_ROWS)
        checks.at_least("max_queue", max_queue, 0)
        self.model, self.max_batch, self.max_queue = model, max_batch, max_queue
        sizes = [1 << k for k in range(max_batch.bit_length()) if 1 << k < max_batch]
        self.rows = Rows(max_batch, model.sampler, sizes + [max_batch])
        self._waiting = collections.deque()
        self._by_row: dict[int, Stream] = {}
        self._texts: dict[Stream, tuple] = {}  # the decoder and stop texts of each stream
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="kerasgen-engine", daemon=True)
        self.generated = 0  # tokens, all streams together (for /metrics)

    # -- the outside: any thread --

    def start(self) -> Engine:
        self._thread.start()
        return self

    def warm_up(self) -> None:
        """Compile the loop at every batch size for plain sampling, before any request
        pays for it (the other settings compile on first use)."""
        for size in self.rows.sizes:
            for row in range(size):
                self.rows.join(row, "", SamplingOptions())
            self.rows.run()
            for row in range(size):
                self.rows.leave(row)

    def submit(self, streams: list[Stream]) -> None:
        """Queue ``streams`` (all or none); ``Busy`` when there is no room."""
        with self._cond:
            room = self.max_queue + len(self.rows.free)  # streams wait here until a chunk ends
            if self._stopping or len(self._waiting) + len(streams) > room:
                raise Busy(
                    "the server is stopping"
                    if self._stopping
                    else f"all {self.max_batch} rows are in use and {self.max_queue} "
                    "streams wait; try again shortly"
                )
            for stream in streams:
                if stream.n <= 0:
                    stream.deliver("", FINISH_LENGTH)
                else:
                    self._waiting.append(stream)
            self._cond.notify()

    def stop(self, timeout: float = 10.0) -> None:
        """End every stream (``length`` for those running) and the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout)

    @property
    def active(self) -> int:
        return len(self._by_row)

    @property
    def queued(self) -> int:
        return len(self._waiting)

    # -- the engine thread --

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._waiting and not self._by_row and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    break
                self._admit()
            if not self._by_row:
                continue
            try:
                taken = self.rows.run()
            except Exception as e:
                LOG.error("generation failed: %s: %s", type(e).__name__, str(e).splitlines()[0])
                for row in list(self._by_row):
                    self._finish(row, "", FINISH_ERROR)
                continue
            self._hand_out(taken)
            self._pack()
        with self._cond:
            for row in list(self._by_row):
                self._finish(row, "", FINISH_LENGTH)
            while self._waiting:
                self._waiting.popleft().deliver("", FINISH_CANCELLED)

    def _admit(self) -> None:
        """Waiting streams into free rows, lowest first (called holding the lock)."""
        free = self.rows.free
        while self._waiting and free:
            stream = self._waiting.popleft()
            if stream.cancelled.is_set():
                stream.deliver("", FINISH_CANCELLED)
                continue
            row = free.pop(0)
            self.rows.join(row, stream.prime, stream.options, stream.index)
            self._by_row[row] = stream
            self._texts[stream] = (self.model.vocab.decoder(), StopTexts(stream.stop, 1))

    def _hand_out(self, taken) -> None:
        for row, stream in list(self._by_row.items()):
            new = taken.new(row)[: stream.n - stream.made]
            stream.made += len(new)
            self.generated += len(new)
            decoder, cut = self._texts[stream]
            text = cut.feed([decoder.decode(new)])[0]
            if cut.all_stopped:
                self._finish(row, text, FINISH_STOP)
            elif stream.made >= stream.n:
                tail = cut.feed([decoder.flush()])[0]
                self._finish(
                    row,
                    text + tail + ("" if cut.all_stopped else cut.flush()[0]),
                    FINISH_STOP if cut.all_stopped else FINISH_LENGTH,
                )
            elif stream.cancelled.is_set():
                self._finish(row, text, FINISH_CANCELLED)
            elif text:
                stream.deliver(text, None)

    def _finish(self, row: int, text: str, why: str) -> None:
        stream = self._by_row.pop(row)
        self._texts.pop(stream, None)
        self.rows.leave(row)
        stream.deliver(text, why)

    def _pack(self) -> None:
        """Move the streams of the highest rows into the lowest free ones, so the next
        chunk runs on as small a batch as they fit in."""
        while self._by_row:
            top, free = max(self._by_row), self.rows.free
            if not free or free[0] > top:
                return
            self.rows.move(top, free[0])
            self._by_row[free[0]] = self._by_row.pop(top)
