"""Continuous batching: one background thread owns the device loop; HTTP handlers only enqueue.

A request becomes a `Job` (its prompt ids and settings, already checked). `Scheduler.submit` puts it in a
bounded queue (full: the caller answers 429, never an unbounded backlog). The thread, at every step
boundary, frees the rows of finished or cancelled jobs, prefills waiting jobs into free rows
(`DecodeSlots.join`), runs one decode step of every row and hands each live row's token to its job. A
job's tokens reach its handler through an asyncio queue of the handler's event loop, so handlers await
and never block; a handler that stops listening (a client gone, a stop string seen) cancels its job,
whose row is free at the next boundary. EOS and `max_tokens` end a job here; text is the handler's.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import threading

import numpy as np

from uniarm_jax.decode.rollout import left_pad
from uniarm_jax.decode.slots import DecodeSlots, widths

log = logging.getLogger("uniarm.serve")


@dataclasses.dataclass(frozen=True)
class Finished:
    """The last event of a job: why it ended ("stop": EOS, "length": max_tokens, "cancelled": its
    handler stopped listening, "error": the server failed it)."""

    reason: str


@dataclasses.dataclass(eq=False)
class Job:
    """One request on its way through the slots. `events` receives token ids, then one `Finished`."""

    prompt: list[int]
    bucket: int  # the prompt's padded length (a multiple of `slots.BUCKET`: one join program per bucket)
    max_tokens: int
    base_weight: float
    weights: np.ndarray  # [n_guides]: each guide's weight for this request
    pref: np.ndarray | None  # α for a conditioned ARM
    temperature: float
    top_p: float
    seed: int
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue = dataclasses.field(default_factory=asyncio.Queue)
    generated: int = 0
    cancelled: bool = False

    def emit(self, event) -> None:
        """From the scheduler's thread into the handler's event loop."""
        self.loop.call_soon_threadsafe(self.events.put_nowait, event)

    def cancel(self) -> None:
        """Nobody listens any more: the scheduler frees the job's row (or drops it from the queue)."""
        self.cancelled = True


class Scheduler:
    """The device loop over `DecodeSlots`, in a daemon thread, and its bounded queue."""

    def __init__(self, slots: DecodeSlots, *, max_queue: int, eos_ids, pad_id: int):
        self.slots, self.max_queue = slots, max_queue
        self.eos_ids, self.pad_id = frozenset(eos_ids), pad_id
        self.jobs: list[Job | None] = [None] * slots.plan.slots
        self.pending: collections.deque[Job] = collections.deque()
        self.steps = 0
        self._cv = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="uniarm-serve-decode", daemon=True)

    def warm_up(self, bucket: int) -> None:
        """Compiles every step width and the first prompt bucket's join before the first request (a
        free row joined with an all-padding prompt and left free)."""
        ids, mask = left_pad([[]], bucket, self.pad_id)
        weights = np.zeros(len(self.slots.plan.guides), np.float32)
        pref = None if "pref" not in self.slots.rows else self.slots.rows["pref"][0]
        self.slots.join(0, ids, mask, seed=0, base_weight=1.0, weights=weights, pref=pref, temperature=0.0, top_p=1.0)
        self.slots.free(0)
        for width in widths(self.slots.plan.slots):
            self.slots.step(width)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._cv:
            self._stopping = True
            self._cv.notify()
        self._thread.join()

    def submit(self, job: Job) -> bool:
        """Queues `job`; False when the queue is full (or the server is stopping)."""
        with self._cv:
            if self._stopping or len(self.pending) >= self.max_queue:
                return False
            self.pending.append(job)
            self._cv.notify()
            return True

    def load(self) -> dict:
        return {"slots": len(self.jobs), "busy": sum(j is not None for j in self.jobs), "queued": len(self.pending),
                "steps": self.steps}

    def _next_joins(self) -> list[tuple[int, Job]]:
        """Under the lock, at a step boundary: frees cancelled rows, then fills free rows from the queue."""
        for slot, job in enumerate(self.jobs):
            if job is not None and job.cancelled:
                job.emit(Finished("cancelled"))
                self._release(slot)
        for job in [j for j in self.pending if j.cancelled]:
            job.emit(Finished("cancelled"))
            self.pending.remove(job)
        joins = []
        while self.pending and None in self.jobs:
            job = self.pending.popleft()
            slot = self.jobs.index(None)
            self.jobs[slot] = job
            joins.append((slot, job))
        return joins

    def _release(self, slot: int) -> None:
        self.jobs[slot] = None
        self.slots.free(slot)

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._stopping and not self.pending and all(j is None for j in self.jobs):
                    self._cv.wait()
                if self._stopping:
                    return
                joins = self._next_joins()
            try:
                self._advance(joins)
            except Exception:  # a bug: fail the jobs in flight, keep serving the next ones
                log.exception("decode step failed; failing the requests in flight")
                for slot, job in enumerate(self.jobs):
                    if job is not None:
                        job.emit(Finished("error"))
                        self._release(slot)
                self.slots.reset()

    def _advance(self, joins: list[tuple[int, Job]]) -> None:
        for slot, job in joins:
            ids, mask = left_pad([job.prompt], job.bucket, self.pad_id)
            self.slots.join(slot, ids, mask, seed=job.seed, base_weight=job.base_weight, weights=job.weights,
                            pref=job.pref, temperature=job.temperature, top_p=job.top_p)
        if all(j is None for j in self.jobs):
            return
        tokens = self.slots.step()
        self.steps += 1
        for slot, job in enumerate(self.jobs[:len(tokens)]):
            if job is None:
                continue
            token = int(tokens[slot])
            job.generated += 1
            job.emit(token)
            if token in self.eos_ids or job.generated >= job.max_tokens:
                job.emit(Finished("stop" if token in self.eos_ids else "length"))
                self._release(slot)
