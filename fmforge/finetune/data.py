"""Fine-tuning data: JSONL rows -> token ids with a loss mask, a held-out split, packing.

A row is `{"messages": [{"role", "content"}, ...]}` (chat) or `{"prompt", "completion"}`;
an optional `"group"` (a string) keeps related rows on one side of the held-out split
(the demo groups functions by file). Rows that cannot be used are collected with their
line number and reason; the caller refuses to start above a bad fraction.

Only the assistant turns (chat) or the completion are trained on, each followed by the
end-of-sequence token, so the model learns to stop. Chat rows are rendered with the
tokenizer's chat template (fmforge's, `fmforge.tokenizer.chat`, when it has none) one
segment at a time: the prompt part of each turn and the trained part are tokenized
separately and concatenated, so the mask boundary is exact whatever the tokenizer merges.

`Example.labels[t]` is `input_ids[t]` where token t is trained on, else -100.
`Example.targets()` is what the logits at t must predict (labels shifted by one, inside the
example), which is what packing concatenates: a packed row never asks one example to
predict the next one's first token.
"""
from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from fmforge.errors import InputNotFound, UserError
from fmforge.tokenizer.chat import CHAT_TEMPLATE, check_messages

IGNORE = -100


class FinetuneDataError(UserError):
    """Fine-tuning data that cannot be used (the message names the file and lines)."""


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]
    line: int = 0  # 1-based line in the JSONL file; 0 for examples built in memory
    group: str = ""
    position_ids: list[int] | None = None  # packed rows: positions restart at 0 for each example
    packed_targets: list[int] | None = None

    def targets(self) -> list[int]:
        if self.packed_targets is not None:
            return self.packed_targets
        return self.labels[1:] + [IGNORE]

    @property
    def trained_tokens(self) -> int:
        return sum(t != IGNORE for t in self.labels)


@dataclass
class BadRow:
    line: int
    reason: str


@dataclass
class Dataset:
    path: str
    rows: int
    examples: list[Example]
    bad: list[BadRow] = field(default_factory=list)
    truncated: int = 0

    def summary(self) -> dict:
        return {"path": self.path, "rows": self.rows, "examples": len(self.examples), "bad_rows": len(self.bad),
                "truncated": self.truncated, "tokens": sum(len(e.input_ids) for e in self.examples),
                "trained_tokens": sum(e.trained_tokens for e in self.examples)}


def bos_id(tok, model_config=None) -> int | None:
    """The token a sequence starts with: the tokenizer's BOS, else the model's (fmforge models
    start documents with <|endoftext|>, recorded as the HF config's bos_token_id)."""
    if tok.bos_token_id is not None:
        return tok.bos_token_id
    return getattr(model_config, "bos_token_id", None) if model_config is not None else None


def _encode(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"] if text else []


def _render(tok, messages: list[dict], gen: bool) -> str:
    if not messages:
        return ""
    return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen,
                                   chat_template=tok.chat_template or CHAT_TEMPLATE)


def chat_segments(tok, messages: list[dict]) -> list[tuple[str, bool]]:
    """(text, trained) pieces whose concatenation is the rendered chat; trained pieces are the
    assistant turns' content up to and including the end-of-sequence token."""
    eos = tok.eos_token
    out: list[tuple[str, bool]] = []
    prev = ""
    for i, m in enumerate(messages):
        full = _render(tok, messages[: i + 1], gen=False)
        if m["role"] == "assistant":
            head = _render(tok, messages[:i], gen=True)
            if not (head.startswith(prev) and full.startswith(head)):
                raise FinetuneDataError("the tokenizer's chat template does not render a conversation as the "
                                        "prompt of each turn followed by the turn; cannot tell which tokens to train on")
            out.append((head[len(prev):], False))
            turn = full[len(head):]
            cut = turn.find(eos) if eos else -1
            if cut >= 0:
                out += [(turn[: cut + len(eos)], True), (turn[cut + len(eos):], False)]
            else:
                out.append((turn, True))
        else:
            if not full.startswith(prev):
                raise FinetuneDataError("the tokenizer's chat template is not prefix-stable across turns")
            out.append((full[len(prev):], False))
        prev = full
    return [(t, trained) for t, trained in out if t or trained]


def encode_pieces(tok, pieces: list[tuple[str, bool]], bos: int | None) -> tuple[list[int], list[int]]:
    """Token ids and labels of (text, trained) pieces; a trained piece that does not end in
    the end-of-sequence token gets it appended (the model must learn to stop)."""
    ids: list[int] = []
    labels: list[int] = []
    first = pieces[0][0] if pieces else ""
    if bos is not None and not (tok.bos_token and first.startswith(tok.bos_token)):
        ids.append(bos)
        labels.append(IGNORE)
    for text, trained in pieces:
        piece = _encode(tok, text)
        if trained and (not piece or piece[-1] != tok.eos_token_id):
            piece.append(tok.eos_token_id)
        ids += piece
        labels += piece if trained else [IGNORE] * len(piece)
    return ids, labels


def row_pieces(tok, row: object) -> list[tuple[str, bool]]:
    """The (text, trained) pieces of one JSONL row; UserError naming the field when unusable."""
    if not isinstance(row, dict):
        raise UserError(f"expected a JSON object, got {type(row).__name__}")
    if "messages" in row:
        messages = check_messages(row["messages"], "messages")
        if not any(m["role"] == "assistant" for m in messages):
            raise UserError("messages: no assistant turn to train on")
        return chat_segments(tok, messages)
    if "prompt" in row or "completion" in row:
        for k in ("prompt", "completion"):
            if not isinstance(row.get(k), str):
                raise UserError(f"{k}: expected a string" + ("" if k in row else " (field missing)"))
        if not row["completion"]:
            raise UserError("completion: empty")
        return [(row["prompt"], False), (row["completion"], True)]
    raise UserError(f"neither 'messages' nor 'prompt' + 'completion' (fields: {', '.join(sorted(row)) or 'none'})")


def fit_length(ids: list[int], labels: list[int], max_length: int, policy: str, bos: int | None):
    """(ids, labels, truncated) within max_length, or UserError. truncate-prompt cuts untrained
    tokens from the start (after BOS); the trained part is never cut."""
    if len(ids) <= max_length:
        return ids, labels, False
    if policy == "drop":
        raise UserError(f"{len(ids)} tokens, over finetune.max_length {max_length} (finetune.too_long: drop)")
    keep = 1 if bos is not None and ids and ids[0] == bos else 0
    first_trained = next(i for i, lab in enumerate(labels) if lab != IGNORE)
    cut = len(ids) - max_length
    if first_trained - keep < cut:
        raise UserError(f"{len(ids)} tokens of which {len(ids) - first_trained} are trained on, over "
                        f"finetune.max_length {max_length} even with the prompt cut")
    return ids[:keep] + ids[keep + cut:], labels[:keep] + labels[keep + cut:], True


def load_jsonl(path: Path | str, tok, max_length: int, too_long: str = "truncate-prompt",
               bos: int | None = None) -> Dataset:
    path = Path(path)
    if not path.is_file():
        raise InputNotFound(f"fine-tuning data not found: {path}")
    ds = Dataset(str(path), 0, [])
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            ds.rows += 1
            try:
                try:
                    row = json.loads(raw.decode("utf-8"))
                except UnicodeDecodeError as e:
                    raise UserError(f"not UTF-8 (byte {e.start})") from None
                except json.JSONDecodeError as e:
                    raise UserError(f"not JSON ({e.msg}, column {e.colno})") from None
                ids, labels = encode_pieces(tok, row_pieces(tok, row), bos)
                ids, labels, cut = fit_length(ids, labels, max_length, too_long, bos)
            except FinetuneDataError:
                raise
            except UserError as e:
                ds.bad.append(BadRow(n, str(e)))
                continue
            ds.truncated += cut
            group = row.get("group")
            ds.examples.append(Example(ids, labels, n, group if isinstance(group, str) else f"line {n}"))
    return ds


def check_bad(ds: Dataset, max_bad_fraction: float, show: int = 5) -> None:
    """Refuse a data set with more bad rows than allowed, naming the first ones by line."""
    if not ds.rows:
        raise FinetuneDataError(f"{ds.path}: no rows (expected JSONL of messages or prompt/completion objects)")
    frac = len(ds.bad) / ds.rows
    if frac > max_bad_fraction or not ds.examples:
        first = "; ".join(f"line {b.line}: {b.reason}" for b in ds.bad[:show])
        more = f" (and {len(ds.bad) - show} more)" if len(ds.bad) > show else ""
        raise FinetuneDataError(f"{ds.path}: {len(ds.bad)} of {ds.rows} rows are bad ({frac:.1%}, over "
                                f"finetune.max_bad_fraction {max_bad_fraction:g}): {first}{more}")


def _bucket(group: str, seed: int) -> float:
    h = hashlib.sha256(f"{seed}\0{group}".encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(h[:8], "big") / 2**64


def split_heldout(examples: list[Example], fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """(train, held-out) by a hash of each example's group, so a group is on one side only.
    At least one group goes each way when there are two or more."""
    groups = sorted({e.group for e in examples}, key=lambda g: _bucket(g, seed))
    if len(groups) < 2:
        raise FinetuneDataError("fine-tuning data has fewer than 2 rows (or groups): nothing to hold out; "
                                "give more rows or pass --eval-data")
    held = {g for g in groups if _bucket(g, seed) < fraction} or {groups[0]}
    if len(held) == len(groups):
        held.discard(groups[-1])
    return [e for e in examples if e.group not in held], [e for e in examples if e.group in held]


def pack(examples: list[Example], max_length: int) -> list[Example]:
    """Concatenate examples (in order) into rows of at most max_length tokens; positions restart
    per example (each attends only to itself) and each keeps its own targets."""
    rows: list[Example] = []
    cur: Example | None = None
    for e in examples:
        if cur is None or len(cur.input_ids) + len(e.input_ids) > max_length:
            cur = Example([], [], e.line, e.group, [], [])
            rows.append(cur)
        cur.input_ids += e.input_ids
        cur.labels += e.labels
        cur.position_ids += list(range(len(e.input_ids)))
        cur.packed_targets += e.targets()
    return rows


def batches(examples: list[Example], micro_batch: int, seed: int, epoch: int, window: int = 64):
    """Micro-batches of examples, shuffled per epoch (seeded). Within each window of
    `window` micro-batches the examples are grouped by length, so a micro-batch pads little;
    the batches of a window are then shuffled again."""
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(range(len(examples)))
    rng.shuffle(order)
    span = micro_batch * window
    for w in range(0, len(order), span):
        chunk = sorted(order[w: w + span], key=lambda j: len(examples[j].input_ids))
        group = [chunk[i: i + micro_batch] for i in range(0, len(chunk), micro_batch)]
        rng.shuffle(group)
        for b in group:
            yield [examples[j] for j in b]
