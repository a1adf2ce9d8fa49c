"""The OpenAI API's request bodies (validated, with the field named on a bad value) and the
errors in its JSON shape: {"error": {"message", "type", "param", "code"}}."""
from __future__ import annotations

from typing import Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator


class APIError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 type_: str | None = None):
        super().__init__(message)
        if code is None and status == 400 and param is not None:
            code = "invalid_value"  # a bad parameter, as pydantic's own refusals (from_validation) say
        self.status, self.message, self.param, self.code = status, message, param, code
        self.type = type_ or {400: "invalid_request_error", 401: "authentication_error",
                              404: "not_found_error", 503: "server_error"}.get(status, "server_error")

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


# what a field of several types takes: pydantic names the alternative it tried in the error's
# loc ("prompt.str") and the first error gives that alternative's message only ("should be a valid string")
ALLOWED = {"prompt": "a string, a list of strings, a list of token ids or a list of lists of token ids",
           "stop": "a string or a list of strings",
           "content": "a string or a list of content parts"}


def from_validation(e) -> APIError:
    """The first error of a pydantic ValidationError (or FastAPI's RequestValidationError, whose
    loc starts with "body") as a 400 naming the field."""
    first = e.errors()[0]
    loc = [str(x) for x in first["loc"] if x != "body"]
    # a union field's name followed by more (the alternative's tag): name the field, say what it takes
    cut = next((i for i, x in enumerate(loc[:-1]) if x in ALLOWED), None)
    if cut is not None:
        param = ".".join(loc[:cut + 1])
        return APIError(400, f"{param} must be {ALLOWED[loc[cut]]}", param, "invalid_value")
    param = ".".join(loc) or None
    return APIError(400, f"{param}: {first['msg']}" if param else first["msg"], param, "invalid_value")


class _Common(BaseModel):
    # unknown fields (user, presence_penalty, ...) are accepted and ignored, as servers do; known
    # ones must have their JSON type, as OpenAI's API checks ("5" is not max_tokens 5, true not logprobs 1)
    model_config = ConfigDict(extra="allow", strict=True)
    model: Optional[str] = None
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=-1)  # not in OpenAI's API; vLLM's extension; -1 and 0 mean off
    n: int = Field(1, ge=1, le=16)
    stop: Optional[Union[str, list[str]]] = Field(None, validate_default=True)
    # a 64-bit integer, as OpenAI's; choice i seeds torch's generator with seed + i, which takes
    # -2**63 .. 2**64-1, so seed + 15 still fits
    seed: Optional[int] = Field(None, ge=-2 ** 63, le=2 ** 63 - 1)
    stream: bool = False
    stream_options: Optional[dict] = None
    ignore_eos: bool = False  # vLLM's extension: keep going past end-of-text (benchmarks)

    @field_validator("stop")
    @classmethod
    def _stops(cls, v):
        v = [v] if isinstance(v, str) else (v or [])
        if len(v) > 4 or any(not s for s in v):
            raise ValueError("up to 4 non-empty stop strings")
        return v

    @property
    def include_usage(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))


Prompt = Union[str, list[str], list[int], list[list[int]]]


class CompletionRequest(_Common):
    prompt: Prompt
    max_tokens: Optional[int] = Field(16, ge=0)
    logprobs: Optional[int] = Field(None, ge=0, le=20)
    echo: bool = False

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, v):
        if isinstance(v, list) and not v:
            raise ValueError("must not be empty")
        return v

    def prompts(self) -> list[Union[str, list[int]]]:
        """Each prompt, a string or token ids, as the API allows one or a list of them."""
        p = self.prompt
        if isinstance(p, str) or (isinstance(p, list) and all(isinstance(x, int) for x in p)):
            return [p]
        return list(p)


class Message(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    role: str
    content: Union[str, list[dict]]

    def text(self) -> str:  # content parts: the text ones, joined
        if isinstance(self.content, str):
            return self.content
        return "".join(part.get("text", "") for part in self.content if part.get("type") == "text")


class ChatRequest(_Common):
    messages: list[Message] = Field(min_length=1)
    max_tokens: Optional[int] = Field(None, ge=1)
    max_completion_tokens: Optional[int] = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: Optional[int] = Field(None, ge=0, le=20)
