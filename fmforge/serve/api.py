"""The OpenAI-compatible HTTP API (FastAPI; the `[serve]` extra): the app, its error
handlers (OpenAI's JSON shape for every error), the API key check and the small routes;
completions and chat live in fmforge.serve.routes, the shared state in fmforge.serve.service."""
from __future__ import annotations

from importlib import resources

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from pydantic import ValidationError

from fmforge.serve import routes
from fmforge.serve.protocol import APIError, ChatRequest, CompletionRequest, from_validation
from fmforge.serve.service import Service


def create_app(svc: Service) -> FastAPI:
    app = FastAPI(title="fmforge", version="1")
    app.state.svc = svc

    @app.exception_handler(APIError)
    async def _api_error(request, e: APIError):
        return JSONResponse(e.body(), status_code=e.status)

    @app.exception_handler(RequestValidationError)
    async def _bad_request(request, e: RequestValidationError):
        return JSONResponse(from_validation(e).body(), status_code=400)

    @app.exception_handler(Exception)
    async def _bug(request, e: Exception):  # never a bare 500 page: the OpenAI shape, and the server lives on
        return JSONResponse(APIError(500, f"internal error: {type(e).__name__}: {e}").body(), status_code=500)

    @app.middleware("http")
    async def _auth(request: Request, call_next):
        public = request.url.path in ("/", "/health", "/metrics")
        if svc.api_key and not public and request.headers.get("authorization") != f"Bearer {svc.api_key}":
            err = APIError(401, "missing or wrong API key (send Authorization: Bearer KEY)", None, "invalid_api_key")
            return JSONResponse(err.body(), status_code=401)
        return await call_next(request)

    @app.get("/", response_class=HTMLResponse)
    async def chat_page():
        return resources.files("fmforge.serve").joinpath("chat.html").read_text(encoding="utf-8")

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics():
        return svc.sched.metrics.render()

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": svc.name, "object": "model", "created": svc.created,
                                            "owned_by": "fmforge", "max_model_len": svc.max_len}]}

    async def json_of(request: Request) -> dict:
        try:
            raw = await request.json()
        except (ValueError, UnicodeDecodeError):
            raise APIError(400, "the request body is not JSON", None, "invalid_json") from None
        if not isinstance(raw, dict):
            raise APIError(400, "the request body must be a JSON object", None, "invalid_json")
        return raw

    async def body_of(request: Request, cls):
        raw = await json_of(request)
        try:
            return cls.model_validate(raw)
        except ValidationError as e:
            raise from_validation(e) from None

    @app.post("/tokenize")
    async def tokenize(request: Request):
        raw = await json_of(request)
        if "messages" in raw:
            body = await body_of(request, ChatRequest)
            text = routes.chat_text(body)
        elif isinstance(raw.get("prompt"), str):
            text = raw["prompt"]
        else:
            raise APIError(400, "send {\"prompt\": \"text\"} or {\"messages\": [...]}", "prompt")
        ids = svc.encode(text)
        return {"tokens": ids, "count": len(ids), "max_model_len": svc.max_len}

    @app.post("/detokenize")
    async def detokenize(request: Request):
        ids = (await json_of(request)).get("tokens")
        # a JSON true is a bool, which Python counts as an int: refuse it, as the strict request models do
        if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            raise APIError(400, "send {\"tokens\": [ids]}", "tokens")
        return {"prompt": svc.decode(svc.ids_of(ids) if ids else [])}

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = await body_of(request, CompletionRequest)
        return await routes.completions(svc, request, body)

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await body_of(request, ChatRequest)
        return await routes.chat(svc, request, body)

    return app
