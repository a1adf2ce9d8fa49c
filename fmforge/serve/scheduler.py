"""Continuous batching: one background thread owns the Engine and, between decode steps,
admits waiting requests (one batched prefill into free slots) and retires finished or
cancelled ones, so requests join and leave the running batch every step.

Running sequences sit in slots 0..n-1 in the order of `self.running`; a retired sequence's
slot is refilled by moving the last one into it (Engine.move). The waiting queue is
bounded: `submit` raises QueueFull when it is full (the API answers 503). An exception in a
step fails the sequences of that step, never the thread.
"""
from __future__ import annotations

import collections
import threading
import time
from typing import Callable

import torch

from fmforge.serve.engine import Engine
from fmforge.serve.metrics import Metrics
from fmforge.serve.sampling import SamplingParams, generator, prompt_logprobs, sample, token_logprobs


class QueueFull(Exception):
    pass


class Sequence:
    """One choice of one request: its prompt, what it generated, and where it stands."""

    def __init__(self, prompt: list[int], params: SamplingParams, emit: Callable | None = None):
        # emit(seq, new_text, final) is called from the scheduler thread: new text as it is
        # decoded, then once with final=True when the sequence ends (finish_reason set)
        self.prompt, self.params, self.emit = prompt, params, emit
        self.out: list[int] = []
        self.logprobs: list[tuple[float, list]] = []  # per generated token, when params.logprobs
        self.prompt_lp: list | None = None
        self.text, self.sent = "", 0  # decoded output so far, and how much of it was emitted
        self.finish_reason: str | None = None
        self.error: str | None = None
        self.cancelled = False
        self.gen = None if params.greedy else generator(params.seed)
        self.done = threading.Event()
        self.t_submit, self.t_first, self.t_done = time.perf_counter(), None, None

    @property
    def position(self) -> int:  # position of the last token, the one the next step feeds
        return len(self.prompt) + len(self.out) - 1


class Scheduler:
    def __init__(self, engine: Engine, detok: Callable[[list[int]], str] | None = None, max_queue: int = 256,
                 prefill_tokens: int = 8192, lookahead: int = 8):
        self.engine, self.detok = engine, detok
        self.lookahead = lookahead  # greedy steps run on the device per host round trip
        self.max_queue, self.prefill_tokens = max_queue, prefill_tokens
        self.waiting: collections.deque[Sequence] = collections.deque()
        self.running: list[Sequence] = []
        self.metrics = Metrics()
        self.steps = 0
        self._cv = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._loop, name="fmforge-scheduler", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------- other threads
    def submit(self, seqs: list[Sequence]) -> None:
        """Queue the choices of one request together, or raise QueueFull."""
        with self._cv:
            if len(self.waiting) + len(seqs) > self.max_queue:
                self.metrics.count("rejected")
                raise QueueFull(f"the queue holds {len(self.waiting)} requests (limit {self.max_queue})")
            self.waiting.extend(seqs)
            self.metrics.queue_depth = len(self.waiting)
            self._cv.notify()

    def cancel(self, seqs: list[Sequence]) -> None:
        for s in seqs:
            s.cancelled = True
        with self._cv:
            self._cv.notify()

    def close(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify()
        self._thread.join(timeout=10)

    # ------------------------------------------------------------- scheduler thread
    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._stop and not self.waiting and not self.running:
                    self._cv.wait()
                if self._stop:
                    break
                new = self._take()
            self._guard(new, self._admit)
            self._retire()  # those done at once (max_tokens 0, a stop token first) never decode
            if self.running:
                self._guard(self.running, self._decode)
            self._retire()
        for s in [*self.running, *self.waiting]:
            self._finish(s, "cancelled")

    def _take(self) -> list[Sequence]:
        """Waiting sequences that fit in the free slots and one prefill's token budget."""
        new, budget = [], self.prefill_tokens
        free = self.engine.cache.slots - len(self.running)
        while self.waiting and len(new) < free:
            s = self.waiting[0]
            if s.cancelled:
                self._finish(self.waiting.popleft(), "cancelled")
                continue
            if new and len(s.prompt) > budget:
                break
            budget -= len(s.prompt)
            new.append(self.waiting.popleft())
        self.metrics.queue_depth = len(self.waiting)
        return new

    def _guard(self, seqs: list[Sequence], fn) -> None:
        if not seqs:
            return
        try:
            fn(seqs)
        except Exception as e:  # a failed step ends its sequences, not the server
            for s in list(seqs):
                s.error = f"{type(e).__name__}: {e}"
                s.finish_reason = "error"
                if s not in self.running:  # a failed prefill: never reached a slot, _retire will not see it
                    self._finish(s, "error")

    def _admit(self, new: list[Sequence]) -> None:
        first = len(self.running)
        self.metrics.prompt_tokens += sum(len(s.prompt) for s in new)
        logits = self.engine.prefill(list(range(first, first + len(new))), [s.prompt for s in new],
                                     [s.params.prompt_logprobs for s in new])
        for s, lg in zip(new, logits):
            if s.params.prompt_logprobs:
                s.prompt_lp = prompt_logprobs(lg.cpu(), s.prompt, s.params.logprobs or 0)
            self.running.append(s)  # keeps slot order even when it finishes at once (retired below)
            if s.params.max_tokens == 0:
                s.finish_reason = "length"
                continue
            self._take_token(s, lg[-1].cpu())

    def _decode(self, seqs: list[Sequence]) -> None:
        live = [s.finish_reason is None for s in seqs]
        if all(s.params.greedy and s.params.logprobs is None for s in seqs):
            # several steps per round trip; a sequence that ends early wastes only its rest
            k = min(self.lookahead, min(s.params.max_tokens - len(s.out) for s in seqs if s.finish_reason is None),
                    self.engine.max_len - 1 - max(s.position for s in seqs))
            if k > 1:
                toks = self.engine.decode_greedy([s.out[-1] for s in seqs], [s.position for s in seqs], k)
                self.steps += k
                for s, ok, row in zip(seqs, live, toks):
                    for t in row if ok else ():
                        if s.finish_reason is not None or s.cancelled:
                            break
                        self._take_token(s, None, t)
                return
        logits = self.engine.decode([s.out[-1] for s in seqs], [s.position for s in seqs])
        self.steps += 1
        greedy = logits.argmax(-1).tolist()
        cpu_rows = [i for i, s in enumerate(seqs) if live[i] and (not s.params.greedy or s.params.logprobs is not None)]
        rows = dict(zip(cpu_rows, logits[cpu_rows].float().cpu())) if cpu_rows else {}
        for i, s in enumerate(seqs):
            if live[i]:
                self._take_token(s, rows.get(i), greedy[i])

    def _take_token(self, s: Sequence, logits: torch.Tensor | None, greedy_tok: int | None = None) -> None:
        p = s.params
        tok = greedy_tok if p.greedy and greedy_tok is not None else sample(logits, p, s.gen)
        if s.t_first is None:
            s.t_first = time.perf_counter()
        self.metrics.generation_tokens += 1
        if tok in p.stop_ids:
            s.finish_reason = "stop"
            self._emit(s)
            return
        s.out.append(tok)
        if p.logprobs is not None:
            s.logprobs.append(token_logprobs(logits, tok, p.logprobs))
        if len(s.out) >= p.max_tokens or s.position + 1 >= self.engine.max_len:
            s.finish_reason = "length"
        self._emit(s)

    def _emit(self, s: Sequence) -> None:
        """Decode the new text; end at a stop string; hold back what may still become one."""
        if self.detok is not None:
            text = self.detok(s.out)
            hits = [i for i in (text.find(st) for st in s.params.stop) if i >= 0]
            if hits:
                text, s.finish_reason = text[: min(hits)], "stop"
            s.text = text
        if s.emit is not None and s.finish_reason is None:
            hold = max((len(st) - 1 for st in s.params.stop), default=0)
            safe = len(s.text) - hold
            while safe > s.sent and s.text[safe - 1] == "\ufffd":  # an incomplete UTF-8 character
                safe -= 1
            if safe > s.sent:
                s.emit(s, s.text[s.sent:safe], False)
                s.sent = safe

    def _retire(self) -> None:
        for i in range(len(self.running) - 1, -1, -1):
            s = self.running[i]
            if s.finish_reason is None and not s.cancelled:
                continue
            last = len(self.running) - 1
            if i != last:
                self.engine.move(last, i)
                self.running[i] = self.running[last]
            self.running.pop()
            self._finish(s, "cancelled" if s.cancelled and s.finish_reason is None else s.finish_reason)
        self.metrics.running = len(self.running)

    def _finish(self, s: Sequence, reason: str) -> None:
        s.finish_reason, s.t_done = reason, time.perf_counter()
        ttft = None if s.t_first is None else s.t_first - s.t_submit
        self.metrics.finished(reason, ttft, s.t_done - s.t_submit)
        if s.emit is not None:
            s.emit(s, s.text[s.sent:], True)
            s.sent = len(s.text)
        s.done.set()
