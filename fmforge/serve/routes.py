"""/v1/completions and /v1/chat/completions: requests to sequences, sequences to OpenAI's
response and stream-chunk shapes (server-sent events ending with `data: [DONE]`)."""
from __future__ import annotations

import time

from fmforge.errors import UserError
from fmforge.serve.service import Service, new_id, sse, stream, usage
from fmforge.serve.protocol import APIError, ChatRequest, CompletionRequest
from fmforge.tokenizer.chat import render_chat

DONE = "data: [DONE]\n\n"


def _failed(seqs) -> None:
    bad = next((s for s in seqs if s.finish_reason == "error"), None)
    if bad is not None:
        raise APIError(500, f"generation failed: {bad.error}", None, "engine_error")


def _top(svc: Service, top) -> dict:
    return {svc.piece(t): lp for t, lp in top}


def completion_logprobs(svc: Service, s, echo: bool, start: int = 0, end: int | None = None,
                        with_prompt: bool | None = None) -> dict:
    """OpenAI's completions `logprobs` object: tokens, token_logprobs, top_logprobs, text_offset;
    with echo the prompt's tokens come first (the first has no log-prob: nothing precedes it)."""
    tokens, lps, tops = [], [], []
    if echo if with_prompt is None else with_prompt:
        for i, tok in enumerate(s.prompt):
            e = s.prompt_lp[i] if s.prompt_lp else None
            tokens.append(svc.piece(tok))
            lps.append(None if e is None else e[0])
            tops.append(None if e is None else _top(svc, e[1]))
    for tok, (lp, top) in zip(s.out[start:end], s.logprobs[start:end]):
        tokens.append(svc.piece(tok))
        lps.append(lp)
        tops.append(_top(svc, top))
    offsets, at = [], 0
    for t in tokens:
        offsets.append(at)
        at += len(t)
    return {"tokens": tokens, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offsets}


def _reason(s) -> str:
    return "length" if s.finish_reason == "length" else "stop"


async def completions(svc: Service, request, body: CompletionRequest):
    svc.check(body)
    prompts = [svc.ids_of(p) for p in body.prompts()]
    max_tokens = [svc.fit(ids, body.max_tokens, "max_tokens") for ids in prompts]
    want_lp = body.logprobs is not None
    flat, params = [], []
    for ids, mt in zip(prompts, max_tokens):
        for j in range(body.n):
            flat.append(ids)
            params.append(svc.params(body, mt, body.logprobs, body.echo and want_lp, j))
    seqs, q = svc.submit(flat, params)
    rid, created = new_id("cmpl"), int(time.time())
    head = {"id": rid, "object": "text_completion", "created": created, "model": svc.name}
    if body.stream:
        return stream(_stream_completions(svc, request, body, seqs, q, head, flat))
    async for _ in svc.events(request, seqs, q, poll=True):
        pass
    _failed(seqs)
    choices = []
    for i, s in enumerate(seqs):
        text = (svc.decode(s.prompt) if body.echo else "") + s.text
        choices.append({"index": i, "text": text, "finish_reason": _reason(s),
                        "logprobs": completion_logprobs(svc, s, body.echo) if want_lp else None})
    return {**head, "choices": choices, "usage": usage(seqs, flat)}


async def _stream_completions(svc, request, body, seqs, q, head, flat):
    index = {id(s): i for i, s in enumerate(seqs)}
    sent_lp = {i: 0 for i in range(len(seqs))}
    if body.echo:  # the prompt first, as its own chunk per choice
        for i, s in enumerate(seqs):
            lp = completion_logprobs(svc, s, True, 0, 0, with_prompt=True) if body.logprobs is not None else None
            yield sse({**head, "choices": [{"index": i, "text": svc.decode(s.prompt), "logprobs": lp,
                                            "finish_reason": None}]})
    async for s, text, final in svc.events(request, seqs, q, poll=False):
        i = index[id(s)]
        if s.finish_reason == "error":
            yield sse(APIError(500, f"generation failed: {s.error}", None, "engine_error").body())
            continue
        lp = None
        if body.logprobs is not None:
            n = len(s.logprobs)
            lp = completion_logprobs(svc, s, False, sent_lp[i], n, with_prompt=False)
            sent_lp[i] = n
        yield sse({**head, "choices": [{"index": i, "text": text, "logprobs": lp,
                                        "finish_reason": _reason(s) if final else None}]})
    if body.include_usage:
        yield sse({**head, "choices": [], "usage": usage(seqs, flat)})
    yield DONE


def chat_logprobs(svc: Service, s, start: int = 0, end: int | None = None) -> dict:
    def entry(t, lp):
        p = svc.piece(t)
        return {"token": p, "logprob": lp, "bytes": list(p.encode("utf-8"))}
    return {"content": [{**entry(tok, lp), "top_logprobs": [entry(t, v) for t, v in top]}
                        for tok, (lp, top) in zip(s.out[start:end], s.logprobs[start:end])]}


def chat_text(body: ChatRequest) -> str:
    """The prompt text of a chat request (its messages in the chat template); a role the
    template lacks is the client's mistake, 400 naming `messages` (/tokenize shares this)."""
    try:
        return render_chat([{"role": m.role, "content": m.text()} for m in body.messages])
    except UserError as e:
        raise APIError(400, str(e), "messages") from None


async def chat(svc: Service, request, body: ChatRequest):
    svc.check(body)
    if body.top_logprobs is not None and not body.logprobs:  # refused, as OpenAI does, not ignored
        raise APIError(400, "top_logprobs requires logprobs: true", "top_logprobs")
    text = chat_text(body)
    ids = svc.ids_of(text)
    mt = svc.fit(ids, body.max_completion_tokens or body.max_tokens, "max_tokens")
    k = (body.top_logprobs or 0) if body.logprobs else None
    seqs, q = svc.submit([ids] * body.n, [svc.params(body, mt, k, False, j, svc.header_ids) for j in range(body.n)])
    head = {"id": new_id("chatcmpl"), "created": int(time.time()), "model": svc.name}
    if body.stream:
        return stream(_stream_chat(svc, request, body, seqs, q, head, [ids] * body.n))
    async for _ in svc.events(request, seqs, q, poll=True):
        pass
    _failed(seqs)
    choices = [{"index": j, "message": {"role": "assistant", "content": s.text}, "finish_reason": _reason(s),
                "logprobs": chat_logprobs(svc, s) if k is not None else None} for j, s in enumerate(seqs)]
    return {**head, "object": "chat.completion", "choices": choices, "usage": usage(seqs, [ids] * body.n)}


async def _stream_chat(svc, request, body, seqs, q, head, flat):
    head = {**head, "object": "chat.completion.chunk"}
    index = {id(s): j for j, s in enumerate(seqs)}
    sent_lp = {j: 0 for j in range(len(seqs))}
    for j in range(len(seqs)):
        yield sse({**head, "choices": [{"index": j, "delta": {"role": "assistant", "content": ""},
                                        "logprobs": None, "finish_reason": None}]})
    async for s, text, final in svc.events(request, seqs, q, poll=False):
        j = index[id(s)]
        if s.finish_reason == "error":
            yield sse(APIError(500, f"generation failed: {s.error}", None, "engine_error").body())
            continue
        lp = None
        if body.logprobs:
            n = len(s.logprobs)
            lp, sent_lp[j] = chat_logprobs(svc, s, sent_lp[j], n), n
        if text or not final:
            yield sse({**head, "choices": [{"index": j, "delta": {"content": text}, "logprobs": lp,
                                            "finish_reason": None}]})
            lp = None
        if final:
            yield sse({**head, "choices": [{"index": j, "delta": {}, "logprobs": lp, "finish_reason": _reason(s)}]})
    if body.include_usage:
        yield sse({**head, "choices": [], "usage": usage(seqs, flat)})
    yield DONE
