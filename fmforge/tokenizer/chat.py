"""The chat format: one template shared by export (tokenizer_config.json's `chat_template`),
the server (/v1/chat/completions) and fine-tuning (loss on the assistant's turns only).

A turn is a role header line, the content, then the end-of-text token, then a newline:

    <|user|>\\nHello<|endoftext|>\\n<|assistant|>\\nHi!<|endoftext|>\\n

The role headers `<|system|>`, `<|user|>`, `<|assistant|>` are special tokens of the
default tokenizer (recipe `tokenizer.special_tokens`): encode a rendered chat with special
tokens parsed (HF `Tokenizer.encode` does by default; document text never yields them),
and a tokenizer without them spells them as text. The end-of-text token after each turn is
what teaches a fine-tuned model to stop. `render_chat` is the same
string as the Jinja template rendered by transformers' `apply_chat_template` (a test checks).
"""
from __future__ import annotations

from fmforge.errors import UserError
from fmforge.tokenizer.bpe import EOT

ROLES = ("system", "user", "assistant")

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\\n' + message['content'] + eos_token + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)


def header(role: str) -> str:
    return f"<|{role}|>\n"


def check_messages(messages: object, where: str = "messages") -> list[dict]:
    """Messages as the OpenAI API and chat JSONL give them; a clear error naming the field otherwise."""
    if not isinstance(messages, list) or not messages:
        raise UserError(f"{where}: expected a non-empty list of {{role, content}} objects")
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise UserError(f"{where}[{i}]: expected an object with role and content")
        if m.get("role") not in ROLES:
            raise UserError(f"{where}[{i}].role: {m.get('role')!r} is not one of {', '.join(ROLES)}")
        if not isinstance(m.get("content"), str):
            raise UserError(f"{where}[{i}].content: expected a string")
    return messages


def render_turn(message: dict, eos: str = EOT) -> str:
    return header(message["role"]) + message["content"] + eos + "\n"


def render_chat(messages: list[dict], add_generation_prompt: bool = True, eos: str = EOT) -> str:
    """The prompt text for `messages`; with `add_generation_prompt`, ending in the assistant's
    header so the model writes the next turn."""
    text = "".join(render_turn(m, eos) for m in check_messages(messages))
    return text + (header("assistant") if add_generation_prompt else "")
