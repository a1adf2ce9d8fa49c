"""fmforge's multiple-choice scores agree with EleutherAI lm-evaluation-harness.

The same random-initialised HF Llama (fixed seed) and the same JSONL items, scored by
lm-eval (`hf` model, local custom task YAMLs; HellaSwag's through lm-eval's own
preprocessing function) and by fmforge (the HF folder loaded as an fmforge model):
per-item log-likelihoods within 1e-4, acc and acc_norm identical.
"""
from __future__ import annotations

import gzip
import json
import os
import random
from pathlib import Path

import pytest

from conftest import SHARED

WORDS = ("the a man woman dog cat walks runs jumps over under into ball house tree river quickly slowly then "
         "she he they it is was on in with and but red blue green small large water fire stone light").split()


def _sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def synthetic_rows(seed: int = 0) -> tuple[list[dict], list[dict]]:
    """20 HellaSwag-format rows (with WikiHow artefacts the cleanup removes) and 20 ARC rows."""
    rng = random.Random(seed)
    hs, arc = [], []
    for i in range(20):
        ctx = f"Activity {i}: {_sentence(rng, 6)} [title] {_sentence(rng, 4)}  [step] {_sentence(rng, 3)}"
        endings = [_sentence(rng, rng.randint(2, 9)) + (" [substeps] x" if j == 1 else "") for j in range(4)]
        hs.append({"ctx": ctx, "endings": endings, "label": rng.randrange(4)})
        n = rng.choice([3, 4, 5])
        arc.append({"query": f"Question: {_sentence(rng, 8)}?", "choices": [_sentence(rng, rng.randint(1, 6))
                                                                              for _ in range(n)],
                    "gold": rng.randrange(n)})
    return hs, arc


def first_rows(path: Path, n: int = 20) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(next(f)) for _ in range(n)]


HS_UTILS = '''
from lm_eval.tasks.hellaswag.utils import preprocess

def process_docs(dataset):
    return dataset.map(lambda d: {"query": preprocess(d["ctx"]), "choices": [preprocess(e) for e in d["endings"]],
                                  "gold": int(d["label"])})
'''


def task_yaml(name: str, data: Path, text: str, hellaswag: bool) -> str:
    lines = [f"task: {name}", "dataset_path: json", "dataset_kwargs:", "  data_files:", f"    test: {data}",
             "test_split: test", "output_type: multiple_choice"]
    if hellaswag:
        lines.append("process_docs: !function utils.process_docs")
    lines += [f"doc_to_text: {json.dumps(text)}", "doc_to_target: gold", 'doc_to_choice: "{{choices}}"',
              "metric_list:", "  - metric: acc", "  - metric: acc_norm", "metadata:", "  version: 1.0"]
    return "\n".join(lines) + "\n"


def hf_llama(folder: Path, texts: list[str]) -> None:
    """A byte-level BPE trained on the items and a random-init Llama (seed 0) of its vocabulary."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=600, special_tokens=["<|endoftext|>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>").save_pretrained(folder)
    cfg = LlamaConfig(vocab_size=tok.get_vocab_size(), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      initializer_range=0.3, tie_word_embeddings=False, rms_norm_eps=1e-5,
                      bos_token_id=None, eos_token_id=0)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).to(torch.float32).save_pretrained(folder, safe_serialization=True)


def test_per_item_logliks_and_accuracies_match_lm_eval(tmp_path, monkeypatch):
    pytest.importorskip("lm_eval")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    hs, arc = synthetic_rows()
    sets = {"hs_synth": (hs, True), "arc_synth": (arc, False)}
    tasks_dir = SHARED / "eval" / "tasks"
    if (tasks_dir / "hellaswag.jsonl.gz").is_file() and (tasks_dir / "arc_easy.jsonl.gz").is_file():
        sets["hs_real"] = (first_rows(tasks_dir / "hellaswag.jsonl.gz"), True)
        sets["arc_real"] = (first_rows(tasks_dir / "arc_easy.jsonl.gz"), False)
    yaml_dir = tmp_path / "tasks"
    yaml_dir.mkdir()
    (yaml_dir / "utils.py").write_text(HS_UTILS)
    texts = []
    for name, (rows, is_hs) in sets.items():
        data = tmp_path / f"{name}.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in rows))
        (yaml_dir / f"{name}.yaml").write_text(task_yaml(name, data, "{{query}}" if is_hs else "{{query}}\nAnswer:",
                                                         is_hs))
        texts += [json.dumps(r) for r in rows]
    model_dir = tmp_path / "llama"
    hf_llama(model_dir, texts)

    # --- lm-eval
    import lm_eval
    from lm_eval.tasks import TaskManager

    out = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={model_dir},dtype=float32",
                                  tasks=list(sets), task_manager=TaskManager(include_path=str(yaml_dir)),
                                  batch_size=7, device="cpu", log_samples=True)
    # --- fmforge, through the CLI's code path (task files given as NAME=FILE)
    from fmforge.config import EvalConfig
    from fmforge.eval.commands import run_tasks
    from fmforge.eval.load import load_for_eval

    lm = load_for_eval(model_dir).lm
    lm.batch_tokens = 300  # several forward passes of several sequences each
    for name, (rows, is_hs) in sets.items():
        family = "hellaswag" if is_hs else "arc_easy"
        metrics, items = run_tasks(lm, [f"{family}={tmp_path / (name + '.jsonl')}"], EvalConfig())
        ours_m, ours = metrics[family], items[family]
        theirs = sorted(out["samples"][name], key=lambda s: s["doc_id"])
        assert len(theirs) == len(ours) == 20
        for mine, s in zip(ours, theirs):
            ref = [float(r[0]) for r in s["filtered_resps"]]
            assert mine["loglik"] == pytest.approx(ref, abs=1e-4), (name, s["doc_id"])
            assert mine["acc"] == s["acc"] and mine["acc_norm"] == s["acc_norm"], (name, s["doc_id"])
        res = out["results"][name]
        assert ours_m["acc"] == res["acc,none"] and ours_m["acc_norm"] == res["acc_norm,none"], name
        # a model that is not uniform: the choices differ by whole nats, so the match is not luck
        spread = max(max(r["loglik"]) - min(r["loglik"]) for r in ours)
        assert spread > 1.0
