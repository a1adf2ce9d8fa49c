"""The typed recipe: one object that says everything about a run.

A recipe is YAML with one section per pipeline stage. Every field has a default, so a
recipe only names what differs. Unknown fields and wrong types are errors that name the
field (``RecipeError``), never silently ignored.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, Literal, Optional

import yaml
from pydantic import (BaseModel, ConfigDict, Field, ValidationError, field_validator, model_serializer,
                      model_validator)

RECIPES_DIR = Path(__file__).resolve().parent / "recipes"


from fmforge.errors import UserError


class RecipeError(UserError):
    """A recipe that cannot be used; the message names the file and field."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(Section):
    """Collect and prepare (fmforge.data; docs/data.md). Thresholds are the published
    defaults of the rule they belong to (Gopher, C4, StarCoder)."""

    class Gopher(Section):  # Gopher quality rules (Rae et al. 2021, A.1.1)
        enabled: bool = True
        min_words: int = Field(50, ge=0)
        max_words: int = Field(100_000, ge=1)
        min_mean_word_length: float = Field(3, ge=0)
        max_mean_word_length: float = Field(10, ge=0)
        max_symbol_word_ratio: float = Field(0.1, ge=0)
        max_bullet_lines: float = Field(0.9, ge=0, le=1)
        max_ellipsis_lines: float = Field(0.3, ge=0, le=1)
        min_alpha_words: float = Field(0.8, ge=0, le=1)
        min_stop_words: int = Field(2, ge=0)

    class Repetition(Section):  # Gopher repetition rules (table A1)
        enabled: bool = True
        dup_line_frac: float = 0.3
        dup_para_frac: float = 0.3
        dup_line_char_frac: float = 0.2
        dup_para_char_frac: float = 0.2
        top_ngram_char_frac: list[float] = Field(default_factory=lambda: [0.2, 0.18, 0.16])  # n = 2, 3, 4
        dup_ngram_char_frac: list[float] = Field(
            default_factory=lambda: [0.15, 0.14, 0.13, 0.12, 0.11, 0.10])  # n = 5 ... 10

    class C4(Section):  # C4 line rules (Raffel et al. 2020); terminal_punct off as in FineWeb
        enabled: bool = True
        terminal_punct: bool = False
        min_words_per_line: int = Field(3, ge=0)
        min_sentences: int = Field(5, ge=0)
        max_word_length: int = Field(1000, ge=1)
        lorem_ipsum: bool = True
        javascript: bool = True
        curly_bracket: bool = True
        # default preset: drop a document for "{" only when more than this share of its
        # non-empty lines has one (a code/script page); fineweb: any kept line with "{"
        max_curly_lines: float = Field(0.1, ge=0, le=1)
        # default preset: drop a document when more than this share of its sentence ends is
        # followed by a lowercase word (shuffled or broken text); 1: off
        max_lowercase_starts: float = Field(0.5, ge=0, le=1)
        policy: bool = True
        remove_citations: bool = True

    class Code(Section):  # code rules (StarCoder / The Stack)
        enabled: bool = True
        max_line_length: int = Field(1000, ge=1)
        max_mean_line_length: float = Field(100, gt=0)
        min_alnum_fraction: float = Field(0.25, ge=0, le=1)
        autogen_lines: int = Field(5, ge=0)  # look for "auto-generated" markers in the first N lines

    class NearDedup(Section):  # MinHash LSH
        enabled: bool = True
        ngram: int = Field(5, ge=1)
        num_perm: int = Field(128, ge=8)
        bands: int = Field(16, ge=1)
        rows: int = Field(8, ge=1)
        verify: float = Field(0.75, ge=0, le=1)  # estimated Jaccard a candidate pair must reach; 0: off
        seed: int = 1

        @model_validator(mode="after")
        def _bands(self):
            if self.bands * self.rows > self.num_perm:
                raise ValueError(f"data.near_dedup: bands*rows ({self.bands * self.rows}) > num_perm ({self.num_perm})")
            return self

    # "stdlib" is the built-in default corpus: the running interpreter's standard library.
    sources: list[str] = Field(default_factory=lambda: ["stdlib"])
    include: list[str] = Field(default_factory=lambda: ["*"])  # file-name globs for folders; each file read by its format
    text_field: str = "text"
    strict: bool = False  # unreadable input is an error instead of a counted skip
    binary_max_control_frac: float = Field(0.01, ge=0, le=1)  # prepare's binary guard (fmforge.data.binary)
    binary_max_replacement_frac: float = Field(0.01, ge=0, le=1)
    html_extractor: Literal["resiliparse", "trafilatura"] = "resiliparse"  # WARC HTML to main text (trafilatura: FineWeb's)
    workers: int = Field(0, ge=0)  # processes for prepare; 0: every core
    executor: Literal["local", "ray"] = "local"  # where prepare's tasks and encode's chunks run
    ray_address: Optional[str] = None  # ray.init(address=...); None: start a local Ray
    min_chars: int = Field(64, ge=0)
    max_chars: int = Field(10_000_000, ge=1)
    normalize: Literal["NFC", "NFKC", "none"] = "NFC"
    repair_unicode: bool = True  # ftfy mojibake repair
    # Documents whose collected language (from the file extension) is one of these are
    # code: code rules apply, prose rules and language id do not.
    code_languages: list[str] = Field(default_factory=lambda: [
        "python", "c", "cpp", "javascript", "typescript", "rust", "go", "java", "shell", "html", "json",
        "yaml", "toml"])
    languages: list[str] = Field(default_factory=lambda: ["en"])  # prose languages kept; []: all
    langid_backend: Literal["py3langid", "fasttext"] = "py3langid"
    langid_min_score: float = Field(0.65, ge=0, le=1)
    # "fineweb": datatrove's FineWeb decisions exactly (punctuation tokens count as words, the
    # 100,000-word web-page cap drops books, short lines are dropped even when they are headings).
    # "default": the published rules' intent: alphabetic-word share over word tokens only, no
    # word cap (long documents are kept), short headings before prose and speaker lines kept.
    filters: Literal["default", "fineweb"] = "default"
    gopher: Gopher = Field(default_factory=Gopher)
    repetition: Repetition = Field(default_factory=Repetition)
    c4: C4 = Field(default_factory=C4)
    code: Code = Field(default_factory=Code)
    pii: list[Literal["email", "ip", "phone", "card", "secret"]] = Field(
        default_factory=lambda: ["email", "ip", "phone", "card", "secret"])  # []: no redaction
    dedup_exact: bool = True
    near_dedup: NearDedup = Field(default_factory=NearDedup)
    decontaminate: list[str] = Field(default_factory=list)  # eval files/folders
    decontam_ngram: int = Field(13, ge=1)
    decontam_action: Literal["drop", "report"] = "drop"
    val_fraction: float = Field(0.05, ge=0.0, lt=1.0)
    split_seed: int = 0
    # prepare keeping under this share of its documents is an error naming the rules that
    # removed them (a recipe or input mismatch, not a result); 0: no check (keeping none still fails)
    min_keep_fraction: float = Field(0.05, ge=0.0, le=1.0)

    # Thresholds where the presets differ: fineweb keeps the published (datatrove) values, the
    # default preset the values chosen on the dev part of the filter evaluation set
    # (benchmarks/filter_quality.py; docs/data.md). A value the recipe sets wins over both.
    PRESET_THRESHOLDS: ClassVar[dict] = {"default": {("gopher", "min_alpha_words"): 0.6, ("c4", "min_sentences"): 7},
                                         "fineweb": {("gopher", "min_alpha_words"): 0.8, ("c4", "min_sentences"): 5}}

    @model_validator(mode="after")
    def _preset_thresholds(self):
        for (section, name), value in self.PRESET_THRESHOLDS[self.filters].items():
            sub = getattr(self, section)
            if name not in sub.model_fields_set:
                # set without marking it as given, so that the other preset can still fill it
                object.__setattr__(sub, name, value)
        return self


class TokenizerConfig(Section):
    """Train and encode (fmforge.tokenizer; docs/tokenizer.md)."""

    vocab_size: int = Field(4096, ge=260, le=1_048_576)
    min_frequency: int = Field(2, ge=1)
    digits: Literal[1, 3] = 3  # max digits per pre-token (GPT-4 style splits in groups of 3)
    normalize: Literal["none", "NFC", "NFKC"] = "none"  # stored in tokenizer.json; "none" round-trips exactly
    sample_bytes: int = Field(200_000_000, ge=1)  # training sample: whole documents drawn by id hash
    special_tokens: list[str] = Field(
        default_factory=lambda: ["<|endoftext|>", "<|pad|>", "<|system|>", "<|user|>", "<|assistant|>"]
    )

    @field_validator("special_tokens")
    @classmethod
    def _distinct_tokens(cls, v):  # HF's trainer silently drops an empty or repeated token, shifting ids
        if any(t == "" for t in v):
            raise ValueError(f"an empty string is not a token (entry {v.index('')})")
        dup = sorted({t for t in v if v.count(t) > 1})
        if dup:
            raise ValueError(f"{', '.join(dup)} given more than once; each special token gets one id")
        return v
    path: Optional[str] = None  # use an existing tokenizer.json instead of training one
    workers: int = Field(0, ge=0)  # encode processes; 0: every core
    # text per encode work unit = per shard; None: from the corpus size (about 256 chunks,
    # 1-64 MiB each), so 16 workers get enough units to balance and a big corpus few files
    chunk_bytes: Optional[int] = Field(None, ge=1)


class ModelConfig(Section):
    preset: Optional[str] = None  # a named shape from fmforge.model.presets; fields below override it
    vocab_size: Optional[int] = Field(None, ge=2)  # None: the tokenizer's vocabulary size
    d_model: int = Field(256, ge=8)
    n_layers: int = Field(4, ge=1)
    n_heads: int = Field(4, ge=1)
    n_kv_heads: Optional[int] = Field(None, ge=1)  # None: = n_heads (plain multi-head attention)
    ffn_dim: Optional[int] = Field(None, ge=1)  # None: SwiGLU 8/3·d rounded up to a multiple of 64
    context_length: int = Field(256, ge=8)
    rope_base: float = Field(10000.0, gt=0)
    norm_eps: float = Field(1e-5, gt=0)
    tie_embeddings: bool = True
    qk_norm: bool = False
    init_std: float = Field(0.02, gt=0)
    # Start the residual branches' output projections (attention wo, MLP w2) and an untied
    # output head at zero (modded-nanogpt): every block starts as the identity. Init only;
    # the model computes the same function either way.
    zero_init_out: bool = False
    # Soft-cap the output logits at ±c: c·tanh(logits/c) (Gemma 2, modded-nanogpt), for training
    # and every use of the model (eval, serve). None: off. Llama/Qwen3 formats cannot express it,
    # so such a model is not exported to HF or GGUF.
    logit_softcap: Optional[float] = Field(None, gt=0)
    # Value embeddings (modded-nanogpt): k extra token tables of width n_kv_heads*head_dim; table
    # i is mixed into the attention values of layer i and of layer n_layers-k+i (the first and
    # last k layers share them): v' = a·v + b·table[token], a and b learned per layer. A token's
    # identity reaches the values of deep layers directly. 0: off. Not exportable to HF/GGUF.
    value_embeds: int = Field(0, ge=0)
    # U-net skips (modded-nanogpt): the outputs of the first n_layers//2 blocks are kept, and
    # each block of the last n_layers//2 first adds w·(its mirror block's output), w learned
    # (init 1); an odd middle block does neither. Not exportable to HF/GGUF.
    unet_skips: bool = False

    # Fields added after runs were made, each with the value that means "as before". At that value
    # a field is left out of the dump (model.json, checkpoints, the run identity and the train
    # stage's hash), so a run made before the field existed stays up to date and resumes.
    ABSENT_MEANS: ClassVar[dict[str, Any]] = {"value_embeds": 0, "unet_skips": False}

    @model_serializer(mode="wrap")
    def _omit_fields_at_their_old_meaning(self, handler, info):
        out = handler(self)
        if (info.context or {}).get("every_field"):  # `fmforge config show`: a user sees every option
            return out
        for name, old in self.ABSENT_MEANS.items():
            if name in out and getattr(self, name) == old:
                del out[name]
        return out

    @model_validator(mode="after")
    def _shapes(self) -> "ModelConfig":
        if self.d_model % self.n_heads:
            raise ValueError(
                f"model.n_heads must divide model.d_model (got {self.d_model} and {self.n_heads})"
            )
        if (self.d_model // self.n_heads) % 2:
            raise ValueError(
                f"model.d_model / model.n_heads must be even for RoPE (got {self.d_model // self.n_heads})"
            )
        kv = self.n_kv_heads or self.n_heads
        if self.n_heads % kv:
            raise ValueError(
                f"model.n_kv_heads must divide model.n_heads (got {self.n_heads} and {kv})"
            )
        if 2 * self.value_embeds > self.n_layers:
            raise ValueError(
                f"model.value_embeds: {self.value_embeds} tables serve the first and the last {self.value_embeds} "
                f"layers, which needs 2*value_embeds <= model.n_layers (got n_layers {self.n_layers})"
            )
        return self

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def hidden_dim(self) -> int:
        if self.ffn_dim:
            return self.ffn_dim
        return -(-int(8 * self.d_model / 3) // 64) * 64


class ParallelConfig(Section):
    """How one run is spread over the processes torchrun starts (docs/distributed.md)."""

    # auto: plain single-device training with one process; with several, DDP below
    # fsdp_min_params parameters (a replica fits and DDP's one all-reduce is cheapest),
    # FSDP2 (each block sharded) from there on. fsdp / ddp force one, also at world size 1.
    strategy: Literal["auto", "fsdp", "ddp"] = "auto"
    fsdp_min_params: int = Field(2_000_000_000, ge=0)  # a 2B replica alone takes 32 GB (16 bytes/param)
    # A collective that waits longer than this fails the job (a dead or hung rank), seconds.
    timeout_s: float = Field(600, gt=0)


class TrainConfig(Section):
    # A run's identity is every field not listed below (plus the model, tokenizer and token
    # shards; fmforge.train.identity). The budget says how far to take the run: raising it
    # and resuming continues the same run. Neutral fields change how the run is carried
    # out or watched, not what it computes (device, kernels and compilation change float
    # rounding at most), so changing them neither restarts nor blocks a resume.
    BUDGET_FIELDS: ClassVar[tuple[str, ...]] = ("max_steps", "max_tokens", "time_budget_s")
    NEUTRAL_FIELDS: ClassVar[tuple[str, ...]] = (
        "device", "compile", "attention", "activation_checkpointing", "threads", "log_every",
        "checkpoint_every", "checkpoint_every_s", "keep_checkpoints", "eval_every", "eval_tokens",
        "max_bad_steps", "price_per_gpu_hour", "parallel", "loss_chunk_tokens")

    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"  # auto: bf16 autocast on GPU, fp32 on CPU
    compile: Literal["auto", "on", "off"] = "auto"  # auto: on for CUDA, off for CPU

    @field_validator("compile", mode="before")
    @classmethod
    def _yaml_on_off(cls, v):  # YAML reads a bare on/off as a boolean
        return {True: "on", False: "off"}.get(v, v) if isinstance(v, bool) else v
    micro_batch: int = Field(16, ge=1)  # sequences per forward pass
    global_batch_tokens: Optional[int] = Field(None, ge=1)  # None: one micro-batch per step
    max_steps: Optional[int] = Field(None, ge=1)
    max_tokens: Optional[int] = Field(None, ge=1)
    # Seconds of training steps. Turned into a step count (the plan) from the throughput
    # measured early in the run; the schedule and the stop follow that plan, so a resumed
    # timed run repeats an uninterrupted one exactly. With max_steps/max_tokens: the first reached.
    time_budget_s: Optional[float] = Field(None, gt=0)
    optimizer: Literal["adamw", "muon"] = "adamw"
    lr: float = Field(3e-3, gt=0)
    muon_lr: float = Field(0.02, gt=0)  # optimizer=muon: the rate of the blocks' matrices
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    warmup_steps: int = Field(50, ge=0)
    max_warmup_fraction: float = Field(0.25, ge=0, le=1)  # warm-up lasts at most this share of the planned steps
    schedule: Literal["cosine", "wsd", "constant"] = "cosine"
    decay_fraction: float = Field(0.2, gt=0, le=1)  # wsd: final fraction spent decaying
    weight_decay: float = Field(0.1, ge=0)
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.95, ge=0, lt=1)
    grad_clip: float = Field(1.0, ge=0)
    activation_checkpointing: bool = False
    # The output head and cross-entropy this many tokens at a time, the gradients taken in the
    # forward (fmforge.model.chunked_loss): the logits and their gradient are held for one
    # chunk (chunk × vocab), not for every token of the micro-batch. None or 0: all at once.
    loss_chunk_tokens: Optional[int] = Field(None, ge=0)
    # SDPA kernel preference. auto: cuDNN attention first on Hopper (sm_90), where it is the
    # fastest fused attention; PyTorch's own order (flash first) elsewhere.
    attention: Literal["auto", "cudnn", "flash", "torch"] = "auto"
    seed: int = 1337
    checkpoint_every: int = Field(0, ge=0)  # steps; 0: by time and at the end only
    checkpoint_every_s: float = Field(600, ge=0)  # wall-clock seconds between checkpoints; 0: off
    keep_checkpoints: int = Field(2, ge=1)
    eval_every: int = Field(0, ge=0)  # 0: only at the end
    eval_tokens: int = Field(65_536, ge=1)
    log_every: int = Field(1, ge=1)
    max_bad_steps: int = Field(5, ge=1)  # consecutive NaN/inf losses before the run stops
    price_per_gpu_hour: float = Field(0.0, ge=0)
    threads: int = Field(0, ge=0)  # CPU threads for torch; 0 = all cores
    parallel: ParallelConfig = Field(default_factory=ParallelConfig)

    @model_validator(mode="after")
    def _budget(self) -> "TrainConfig":
        if not (self.max_steps or self.max_tokens or self.time_budget_s):
            raise ValueError("train needs a budget: set train.max_steps, train.max_tokens or train.time_budget_s")
        return self


class EvalConfig(Section):
    max_docs: Optional[int] = Field(None, ge=1)  # None: every held-out document
    max_bytes: Optional[int] = Field(None, ge=1)  # cap on held-out bytes scored
    # held-out documents longer than the context: tokens scored per sliding window (None: the
    # context, windows without overlap, as lm-eval's rolling windows; smaller: more context per token)
    stride: Optional[int] = Field(None, ge=1)
    prompt: str = "def fibonacci(n):"
    max_new_tokens: int = Field(96, ge=0)
    temperature: float = Field(0.0, ge=0)  # 0: greedy
    top_k: Optional[int] = Field(None, ge=1)
    baselines: list[Literal["gzip", "xz"]] = Field(default_factory=lambda: ["gzip", "xz"])
    # downstream tasks (fmforge.eval.tasks; docs/eval.md): NAME or NAME=FILE, scored by the
    # eval stage, by `fmforge eval --model`, and during training every `every_steps` steps
    tasks: list[str] = Field(default_factory=list)
    task_limit: Optional[int] = Field(None, ge=1)  # the first N items of each task; None: all
    every_steps: int = Field(0, ge=0)  # training: score eval.tasks every N steps (0: off)
    train_task_limit: int = Field(200, ge=1)  # items per task during training (a quick signal)
    batch_tokens: int = Field(16384, ge=1)  # tokens per forward pass when scoring
    code_samples: int = Field(1, ge=1)  # completions per HumanEval problem (n of pass@k)
    code_k: list[int] = Field(default_factory=lambda: [1])  # the k of pass@k reported (k <= n)
    code_temperature: float = Field(0.0, ge=0)  # 0: greedy (then n is 1)
    code_max_new_tokens: int = Field(256, ge=1)
    code_timeout_s: float = Field(5.0, gt=0)  # per program
    code_memory_mb: int = Field(1024, ge=64)  # address-space limit per program


class ServeConfig(Section):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    max_batch: int = Field(32, ge=1)  # KV-cache slots: sequences decoded together
    max_queue: int = Field(256, ge=1)  # requests waiting for a slot; beyond it: 503
    max_len: Optional[int] = Field(None, ge=2)  # tokens per sequence (None: the model's context)
    device: str = "auto"  # auto: cuda when available
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # auto: bf16 on CUDA, fp32 on CPU
    cuda_graphs: bool = True  # capture decode steps (CUDA only)
    compile: bool = False  # torch.compile the layer pieces before capture (slow start, faster steps)
    lookahead: int = Field(8, ge=1)  # greedy decode steps per host round trip
    prefill_tokens: int = Field(8192, ge=1)  # prompt tokens per batched prefill


class FinetuneConfig(Section):
    """Fine-tuning a pretrained causal LM (fmforge.finetune; docs/finetune.md). `fmforge finetune`
    reads this section; the pipeline's finetune stage runs it when `enabled`."""

    # As TrainConfig's: a checkpoint continues only under the same identity (every field not
    # listed here, plus the base model's weights and the training rows; fmforge.finetune.checkpoint).
    # The budget may change on a resume; neutral fields change how the run is carried out or
    # reported, not the weights it trains (paths are neutral: the content is fingerprinted).
    BUDGET_FIELDS: ClassVar[tuple[str, ...]] = ("max_steps", "epochs")
    NEUTRAL_FIELDS: ClassVar[tuple[str, ...]] = (
        "enabled", "model", "data", "eval_data", "max_eval_examples", "eval_task", "eval_task_examples",
        "gradient_checkpointing", "loss_chunk_tokens", "device", "log_every", "checkpoint_every", "checkpoint_every_s",
        "keep_checkpoints", "merge", "sample_prompts", "max_new_tokens", "temperature")

    class Lora(Section):  # HF PEFT LoraConfig
        r: int = Field(8, ge=1)
        alpha: float = Field(16.0, gt=0)
        dropout: float = Field(0.05, ge=0, lt=1)
        # None: every attention and MLP projection of the model family (fmforge.finetune.model.LORA_TARGETS),
        # the adapters `fmforge cost plan` counts
        target_modules: Optional[list[str]] = None

    class PromptTuning(Section):  # HF PEFT PromptTuningConfig
        virtual_tokens: int = Field(20, ge=1)
        init_text: Optional[str] = None  # None: random init; text: the virtual tokens start as its embeddings

    enabled: bool = False  # the pipeline's finetune stage (fmforge run) runs only when true
    method: Literal["full", "lora", "prompt-tuning"] = "lora"
    model: Optional[str] = None  # fmforge run/checkpoint or HF folder; None in a recipe: the run's own model
    # JSONL of {"messages": [...]} or {"prompt", "completion"}; "corpus-functions" (pipeline only): pairs
    # built from the run's prepared Python files, prompt = signature + docstring, completion = body
    data: Optional[str] = None
    eval_data: Optional[str] = None  # None: hold out eval_fraction of data (by row `group` when rows have one)
    eval_fraction: float = Field(0.1, gt=0, lt=1)
    max_eval_examples: int = Field(500, ge=1)
    # a task metric before and after, beside the held-out loss. exact-match: the greedy completion of a
    # held-out prompt (to EOS) equals the reference, whitespace at the ends ignored
    eval_task: Optional[Literal["exact-match"]] = None
    eval_task_examples: int = Field(50, ge=1)
    split_seed: int = 0
    max_length: int = Field(512, ge=8)  # tokens per example, prompt + completion + EOS
    too_long: Literal["drop", "truncate-prompt"] = "truncate-prompt"  # truncate-prompt: cut the prompt's start
    max_bad_fraction: float = Field(0.05, ge=0, le=1)  # refuse to start when more rows than this are bad
    packing: bool = False  # several examples per row, each attending only to itself, mask kept per example
    lora: Lora = Field(default_factory=Lora)
    prompt_tuning: PromptTuning = Field(default_factory=PromptTuning)
    # training
    epochs: float = Field(1.0, gt=0)
    max_steps: Optional[int] = Field(None, ge=1)  # None: epochs over the training examples
    micro_batch: int = Field(8, ge=1)
    grad_accum: int = Field(1, ge=1)
    lr: Optional[float] = Field(None, gt=0)  # None: 2e-5 full, 2e-4 lora, 3e-2 prompt-tuning
    warmup_steps: int = Field(10, ge=0)
    schedule: Literal["cosine", "constant"] = "cosine"
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: float = Field(1.0, ge=0)
    gradient_checkpointing: bool = False
    # as train.loss_chunk_tokens: the output head and cross-entropy this many tokens at a time
    # (fmforge.model.chunked_loss), so the logits are never held for the whole micro-batch. None or 0: off
    loss_chunk_tokens: Optional[int] = Field(None, ge=0)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"  # auto: bf16 autocast on GPU (LoRA base in bf16)
    seed: int = 0
    log_every: int = Field(1, ge=1)
    # checkpoints in OUT/checkpoints/ (resume with --resume): every checkpoint_every steps (0: off), every
    # checkpoint_every_s seconds (0: off), on SIGINT/SIGTERM and at the end. One is kept by default: with
    # method full a checkpoint is the whole model plus AdamW's two moments (12 bytes a parameter), and the
    # newest replaces the older only once it is complete.
    checkpoint_every: int = Field(0, ge=0)
    checkpoint_every_s: float = Field(600, ge=0)
    keep_checkpoints: int = Field(1, ge=1)
    merge: bool = False  # lora: also write OUT/merged/, the adapter folded into the base
    sample_prompts: int = Field(1, ge=0)  # held-out prompts completed before/after in the report
    max_new_tokens: int = Field(96, ge=0)
    temperature: float = Field(0.6, ge=0)  # samples: seeded, top-k 40; 0: greedy

    @field_validator("method", mode="before")
    @classmethod
    def _prompt_alias(cls, v):
        return "prompt-tuning" if v == "prompt" else v

    @model_validator(mode="after")
    def _combos(self):
        if self.packing and self.method == "prompt-tuning":
            raise ValueError("finetune.packing: prompt tuning prepends virtual tokens to every row, so packed "
                             "examples cannot be kept apart; set packing false")
        if self.merge and self.method != "lora":
            raise ValueError(f"finetune.merge: only a LoRA adapter folds into the base (method is {self.method})")
        return self

    def learning_rate(self) -> float:
        return self.lr or {"full": 2e-5, "lora": 2e-4, "prompt-tuning": 3e-2}[self.method]


class CostConfig(Section):
    gpu: str = "h100-sxm"
    gpus: int = Field(1, ge=1)
    mfu: Optional[float] = Field(None, gt=0, le=1)
    price_per_hour: Optional[float] = Field(None, ge=0)


class Recipe(Section):
    name: str = "demo"
    out_dir: str = "runs"  # outputs land in <out_dir>/<name>/
    data: DataConfig = Field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(max_steps=100))
    eval: EvalConfig = Field(default_factory=EvalConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig)
    cost: CostConfig = Field(default_factory=CostConfig)

    @field_validator("name")
    @classmethod
    def _plain_name(cls, v: str) -> str:  # runs/<name>/ must stay inside runs/
        import re

        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", v) or ".." in v:
            raise ValueError(f"name must be a plain folder name (letters, digits, '.', '_', '-'; no '/' or '..'), "
                             f"got {v!r}")
        return v

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) / self.name

    def section_hash(self, *sections: str) -> dict[str, Any]:
        """The parts of the recipe a stage depends on, for its up-to-date check."""
        dump = self.model_dump(mode="json")
        return {s: dump[s] for s in sections}


# ---------------------------------------------------------------- loading


def _parse_value(text: str) -> Any:
    """`--set k=v`: the value is YAML, so numbers, booleans, lists and null work."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _is_list(annotation: Any) -> bool:
    """list[...] or Optional[list[...]]: a field whose only non-None form is a list."""
    import types
    import typing

    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        kinds = [a for a in typing.get_args(annotation) if a is not type(None)]
        return len(kinds) == 1 and _is_list(kinds[0])
    return annotation is list or typing.get_origin(annotation) is list


def _scalar(value: Any) -> bool:
    return value is not None and not isinstance(value, (list, dict))


def _apply_override(data: dict, key: str, value: Any, known: BaseModel) -> None:
    parts = key.split(".")
    node, model = data, known
    for i, part in enumerate(parts):
        fields = type(model).model_fields if isinstance(model, BaseModel) else {}
        if part not in fields:
            where = ".".join(parts[:i]) or "the recipe"
            allowed = ", ".join(sorted(fields)) or "(none)"
            raise RecipeError(f"--set {key}: unknown field '{part}' in {where}; allowed: {allowed}")
        if i == len(parts) - 1:
            node[part] = [value] if _is_list(fields[part].annotation) and _scalar(value) else value
        else:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise RecipeError(f"--set {key}: '{'.'.join(parts[: i + 1])}' is not a section")
            model = getattr(model, part)


def _format_validation(err: ValidationError, source: str, sets: dict[str, str] | None = None) -> str:
    """One line per error, blaming where the value came from: a `--set key=value` (`sets`:
    key → the item as given) for errors in the field it set, else the recipe file."""
    sets = sets or {}
    lines, from_file, around = [], False, []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"])
        given = next((k for k in sets if loc == k or loc.startswith(k + ".")), None)
        from_file |= given is None
        if given is None:  # a check across a section's fields may be about a --set inside it
            around += [v for k, v in sets.items() if (not loc or k.startswith(loc + ".")) and v not in around]
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown field"
            parent = e["loc"][:-1]
            model: Any = Recipe
            for p in parent:
                ann = model.model_fields.get(str(p)) if hasattr(model, "model_fields") else None
                model = ann.annotation if ann is not None else None
            if model is not None and hasattr(model, "model_fields"):
                msg += f"; allowed: {', '.join(sorted(model.model_fields))}"
        elif e["type"] == "literal_error":
            msg = f"{msg} (got {e.get('input')!r})"
        elif "input" in e and not isinstance(e["input"], dict):
            msg = f"{msg} (got {e['input']!r})"
        if given is not None:
            lines.append(f"  --set {sets[given]}: {msg}" if loc == given else f"  --set {sets[given]}: {loc}: {msg}")
        else:
            lines.append(f"  {loc or 'recipe'}: {msg}" if loc else f"  {msg}")
    head = f"invalid recipe {source}" if from_file else "invalid setting"
    if around:
        head += f" with {', '.join('--set ' + v for v in around)}"
    return "\n".join([head + ":", *lines])


def resolve_recipe_path(recipe: str | Path | None) -> Path:
    if recipe is None:
        return RECIPES_DIR / "demo.yaml"
    p = Path(recipe)
    if p.exists():
        return p
    builtin = RECIPES_DIR / f"{recipe}.yaml"
    if builtin.exists():
        return builtin
    names = ", ".join(sorted(x.stem for x in RECIPES_DIR.glob("*.yaml")))
    raise RecipeError(f"recipe file not found: {recipe} (built-in recipes: {names})")


def load_recipe(recipe: str | Path | None = None, overrides: list[str] | None = None) -> Recipe:
    """Load a recipe file (or a built-in recipe by name) and apply `key=value` overrides."""
    path = resolve_recipe_path(recipe)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise RecipeError(f"recipe {path} is not valid YAML: {' '.join(str(e).split())}") from None
    except UnicodeDecodeError as e:
        raise RecipeError(f"recipe {path} is not UTF-8 text (byte {e.start}): a recipe is a YAML file") from None
    except OSError as e:
        raise RecipeError(f"cannot read recipe {path}: {e.strerror}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"recipe {path} must be a mapping of sections, got {type(data).__name__}")
    data = _extended(data, path, [path.resolve()])
    sets: dict[str, str] = {}
    for item in overrides or []:
        if "=" not in item:
            raise RecipeError(f"--set expects key=value, got '{item}'")
        key, value = item.split("=", 1)
        _apply_override(data, key.strip(), _parse_value(value), Recipe())
        sets[key.strip()] = f"{key.strip()}={value}"
    data = _with_preset(data, path)
    try:
        return Recipe.model_validate(data)
    except ValidationError as e:
        raise RecipeError(_format_validation(e, str(path), sets)) from None


def _empty_sections(data: dict, model: type[BaseModel]) -> dict:
    """A section left empty (`train:` with every field commented out) is YAML null: read it
    as {} (all defaults), as the user meant, in nested sections too."""
    out = dict(data)
    for k, v in data.items():
        ann = model.model_fields[k].annotation if k in model.model_fields else None
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out[k] = {} if v is None else _empty_sections(v, ann) if isinstance(v, dict) else v
    return out


def _deep_merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for k, v in top.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _extended(data: dict, path: Path, seen: list[Path]) -> dict:
    """`extends: NAME` starts from another recipe (a file beside this one, a path, or a built-in
    name); this recipe's fields win, section by section. A recipe that only adds a stage (the
    fine-tuning demo over the demo) then shares the earlier stages' settings, so they are reused."""
    data = _empty_sections(data, Recipe)  # before merging: an empty section keeps the base's fields
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise RecipeError(f"invalid recipe {path}:\n  extends: expected a recipe name or file, got {parent!r}")
    near = path.parent / parent
    base_path = near if near.is_file() else path.parent / f"{parent}.yaml"
    base_path = base_path if base_path.is_file() else resolve_recipe_path(parent)
    if base_path.resolve() in seen:
        raise RecipeError(f"invalid recipe {path}:\n  extends: {parent!r} extends itself (through {seen[-1]})")
    try:
        base = yaml.safe_load(base_path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, OSError, UnicodeDecodeError) as e:
        raise RecipeError(f"recipe {base_path} (extended by {path}) cannot be read: {' '.join(str(e).split())}") from None
    if not isinstance(base, dict):
        raise RecipeError(f"recipe {base_path} must be a mapping of sections, got {type(base).__name__}")
    return _deep_merge(_extended(base, base_path, seen + [base_path.resolve()]), data)


def _with_preset(data: dict, path: Path) -> dict:
    """Fill model fields from a named preset; fields the recipe sets explicitly win."""
    model = data.get("model")
    if not isinstance(model, dict) or not model.get("preset"):
        return data
    from fmforge.model.presets import PRESETS  # the model's arithmetic, no torch

    name = model["preset"]
    if name not in PRESETS:
        raise RecipeError(
            f"invalid recipe {path}:\n  model.preset: unknown preset {name!r}; allowed: {', '.join(PRESETS)}"
        )
    return {**data, "model": {**PRESETS[name], **model}}


def recipe_to_yaml(recipe: Recipe) -> str:
    return yaml.safe_dump(json.loads(recipe.model_dump_json(context={"every_field": True})), sort_keys=False)
