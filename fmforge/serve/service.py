"""What the API's routes share: the Service (scheduler, tokenizer, served name, key) that
turns requests into scheduler Sequences and hands their text back to the request's event
loop (`loop.call_soon_threadsafe` onto an asyncio queue), and the response helpers.
A client that goes away (streaming or not) cancels its sequences, freeing their slots.
"""
from __future__ import annotations

import asyncio
import json
import time
import uuid

from fastapi import Request
from fastapi.responses import StreamingResponse

from fmforge.serve.protocol import APIError
from fmforge.serve.sampling import SamplingParams
from fmforge.serve.scheduler import QueueFull, Scheduler, Sequence
from fmforge.tokenizer.chat import ROLES, header


class Service:
    """What the routes share: the scheduler, the tokenizer, the model's name and the key."""

    def __init__(self, scheduler: Scheduler, tokenizer, name: str, api_key: str | None = None,
                 eos_id: int | None = None):
        self.sched, self.tok, self.name, self.api_key = scheduler, tokenizer, name, api_key
        self.max_len = scheduler.engine.max_len
        self.vocab = scheduler.engine.cfg.vocab_size
        self.eos_ids = {eos_id} if eos_id is not None else set()
        # a chat reply also ends where the model starts another turn's header
        self.header_ids = {i for r in ROLES if tokenizer is not None
                           for i in [tokenizer.token_to_id(header(r).strip())] if i is not None}
        self.created = int(time.time())

    def encode(self, text: str) -> list[int]:
        if self.tok is None:
            raise APIError(400, "this model has no tokenizer: send the prompt as token ids", "prompt")
        return self.tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return "" if self.tok is None else self.tok.decode(ids, skip_special_tokens=False)

    def piece(self, i: int) -> str:
        return self.decode([i]) if self.tok is not None else str(i)

    # ---------------------------------------------------------------- requests
    def check(self, body) -> None:
        # 404, as OpenAI and vLLM answer a model they do not have (the type stays invalid_request_error)
        if body.model is not None and body.model != self.name:
            raise APIError(404, f"The model `{body.model}` does not exist; this server serves `{self.name}`.",
                           "model", "model_not_found", "invalid_request_error")

    def ids_of(self, prompt) -> list[int]:
        ids = self.encode(prompt) if isinstance(prompt, str) else list(prompt)
        if not ids:
            raise APIError(400, "prompt is empty", "prompt")
        bad = next((i for i in ids if not 0 <= i < self.vocab), None)
        if bad is not None:
            raise APIError(400, f"token id {bad} is outside the vocabulary (0..{self.vocab - 1})", "prompt")
        return ids

    def fit(self, ids: list[int], max_tokens: int | None, param: str) -> int:
        """max_tokens, defaulting to the rest of the context; 400 if prompt + it exceed the context."""
        room = self.max_len - len(ids)
        if max_tokens is None:
            max_tokens = room
        if room < 1 or max_tokens > room:
            raise APIError(400, f"this model's context is {self.max_len} tokens; the prompt has {len(ids)} and "
                                f"{max_tokens} more were asked for", param, "context_length_exceeded")
        return max_tokens

    def submit(self, prompts: list[list[int]], params: list[SamplingParams]):
        loop, q = asyncio.get_running_loop(), asyncio.Queue()

        def emit(seq, text, final):  # scheduler thread -> this request's event loop
            loop.call_soon_threadsafe(q.put_nowait, (seq, text, final))
        seqs = [Sequence(p, sp, emit) for p, sp in zip(prompts, params)]
        try:
            self.sched.submit(seqs)
        except QueueFull as e:
            raise APIError(503, f"server busy: {e}; retry later", None, "queue_full") from None
        return seqs, q

    async def events(self, request: Request, seqs: list[Sequence], q: asyncio.Queue, poll: bool):
        """(sequence, new text, final) until every sequence is final; cancels them on exit
        otherwise (client gone: the stream was closed, or `poll` saw the disconnect)."""
        left = len(seqs)
        try:
            while left:
                try:
                    ev = await asyncio.wait_for(q.get(), 0.5)
                except asyncio.TimeoutError:
                    if poll and await request.is_disconnected():
                        return
                    continue
                left -= ev[2]
                yield ev
        finally:
            if left:
                self.sched.cancel(seqs)

    def params(self, body, max_tokens: int, logprobs: int | None, echo_lp: bool, i: int, extra_stop=()) -> SamplingParams:
        seed = None if body.seed is None else body.seed + i
        return SamplingParams(max_tokens=max_tokens, temperature=body.temperature, top_p=body.top_p,
                              top_k=max(body.top_k, 0), seed=seed, stop=list(body.stop),
                              stop_ids=set() if body.ignore_eos else self.eos_ids | set(extra_stop),
                              logprobs=logprobs, prompt_logprobs=echo_lp)


def usage(seqs: list[Sequence], prompts: list[list[int]]) -> dict:
    p, c = sum(len(x) for x in prompts), sum(len(s.out) for s in seqs)
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


def sse(obj) -> str:
    return f"data: {json.dumps(obj)}\n\n"



def stream(gen) -> StreamingResponse:
    return StreamingResponse(gen, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"
