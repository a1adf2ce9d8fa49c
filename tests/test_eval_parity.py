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


@pytest.mark.slow  # lm-eval's HF model and its task building: 35-80 s on 2 loaded cores
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
                                  tasks=list(sets), task_manager=TaskManager(include_path=str(yaml_dir), include_defaults=False),
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


WG_UTILS = '''
from lm_eval.tasks.winogrande.preprocess_winogrande import doc_to_choice, doc_to_target, doc_to_text
'''


def test_winogrande_lambada_and_five_shot_mmlu_match_lm_eval(tmp_path, monkeypatch):
    """Partial scoring, greedy match and few-shot prompts: lm-eval's own task code on its
    native formats (winogrande's functions, lambada_openai's and mmlu's templates), fmforge on
    the converted files (gauntlet JSONL, MMLU CSV)."""
    pytest.importorskip("lm_eval")
    import csv

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    rng = random.Random(1)
    yaml_dir = tmp_path / "tasks"
    yaml_dir.mkdir()
    (yaml_dir / "wg_utils.py").write_text(WG_UTILS)
    # WinoGrande: lm-eval reads {sentence, option1, option2, answer}; fmforge the gauntlet's conversion
    wg_native, wg_ours = [], []
    for _ in range(12):
        a, b = rng.sample(["Sarah", "Maria", "the dog", "the cat"], 2)
        sent = f"{_sentence(rng, 5)} {a} than {b} so _ {_sentence(rng, rng.randint(2, 6))}."
        ans = rng.choice("12")
        wg_native.append({"sentence": sent, "option1": a, "option2": b, "answer": ans})
        i = sent.index("_")
        wg_ours.append({"context_options": [sent[:i] + a, sent[:i] + b], "continuation": sent[i + 1:].strip(),
                        "gold": int(ans) - 1})
    # LAMBADA: lm-eval reads {text}; fmforge {context, continuation}
    lam_native = [{"text": _sentence(rng, rng.randint(6, 15))} for _ in range(12)]
    lam_ours = [{"context": t["text"].rsplit(" ", 1)[0], "continuation": t["text"].rsplit(" ", 1)[1]}
                for t in lam_native]
    # MMLU: one subject, 6 dev rows (the first 5 are the shots), 10 test rows
    mmlu = tmp_path / "mmlu"
    rows = {}
    for split, n in (("dev", 6), ("test", 10)):
        (mmlu / split).mkdir(parents=True)
        rows[split] = [[_sentence(rng, 6) + "?", *(_sentence(rng, rng.randint(1, 3)) for _ in range(4)),
                        rng.choice("ABCD")] for _ in range(n)]
        with open(mmlu / split / f"high_school_physics_{split}.csv", "w", newline="") as f:
            csv.writer(f).writerows(rows[split])
    files = {}
    for name, data in (("wg_native", wg_native), ("wg_ours", wg_ours), ("lam_native", lam_native),
                       ("lam_ours", lam_ours)):
        files[name] = tmp_path / f"{name}.jsonl"
        files[name].write_text("".join(json.dumps(r) + "\n" for r in data))
    for split in ("dev", "test"):
        files[f"mmlu_{split}"] = tmp_path / f"mmlu_{split}.jsonl"
        files[f"mmlu_{split}"].write_text("".join(json.dumps({"question": r[0], "choices": r[1:5],
                                                              "answer": "ABCD".index(r[5])}) + "\n"
                                                  for r in rows[split]))
    head = ["dataset_path: json", "dataset_kwargs:", "  data_files:"]
    (yaml_dir / "wg_local.yaml").write_text("\n".join(
        ["task: wg_local", *head, f"    test: {files['wg_native']}", "test_split: test",
         "output_type: multiple_choice", "doc_to_text: !function wg_utils.doc_to_text",
         "doc_to_target: !function wg_utils.doc_to_target", "doc_to_choice: !function wg_utils.doc_to_choice",
         "metric_list:", "  - metric: acc"]) + "\n")
    (yaml_dir / "lam_local.yaml").write_text("\n".join(
        ["task: lam_local", *head, f"    test: {files['lam_native']}", "test_split: test",
         "output_type: loglikelihood", "doc_to_text: \"{{text.split(' ')[:-1]|join(' ')}}\"",
         "doc_to_target: \"{{' '+text.split(' ')[-1]}}\"", "metric_list:", "  - metric: acc",
         "  - metric: perplexity"]) + "\n")
    (yaml_dir / "mmlu_local.yaml").write_text("\n".join(
        ["task: mmlu_local", *head, f"    dev: {files['mmlu_dev']}", f"    test: {files['mmlu_test']}",
         "test_split: test", "fewshot_split: dev", "fewshot_config:", "  sampler: first_n", "num_fewshot: 5",
         "output_type: multiple_choice",
         'description: "The following are multiple choice questions (with answers) about high school physics.\\n\\n"',
         'doc_to_text: "{{question.strip()}}\\nA. {{choices[0]}}\\nB. {{choices[1]}}\\nC. {{choices[2]}}\\nD. '
         '{{choices[3]}}\\nAnswer:"', 'doc_to_choice: ["A", "B", "C", "D"]', "doc_to_target: answer",
         "metric_list:", "  - metric: acc"]) + "\n")
    model_dir = tmp_path / "llama"
    hf_llama(model_dir, [json.dumps(r) for r in wg_native + lam_native] + [",".join(r) for r in rows["test"]])

    import lm_eval
    from lm_eval.tasks import TaskManager

    out = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={model_dir},dtype=float32",
                                  tasks=["wg_local", "lam_local", "mmlu_local"],
                                  task_manager=TaskManager(include_path=str(yaml_dir), include_defaults=False), batch_size=5, device="cpu",
                                  log_samples=True)
    from fmforge.config import EvalConfig
    from fmforge.eval.commands import run_tasks
    from fmforge.eval.load import load_for_eval

    lm = load_for_eval(model_dir).lm
    metrics, items = run_tasks(lm, [f"winogrande={files['wg_ours']}", f"lambada_openai={files['lam_ours']}",
                                    f"mmlu={mmlu}"], EvalConfig())
    for ours_name, theirs_name in (("winogrande", "wg_local"), ("lambada_openai", "lam_local"), ("mmlu", "mmlu_local")):
        theirs = sorted(out["samples"][theirs_name], key=lambda s: s["doc_id"])
        ours = items[ours_name]
        assert len(ours) == len(theirs) > 0
        for mine, s in zip(ours, theirs):
            ref = [float(r[0]) for r in s["filtered_resps"]]
            assert mine["loglik"] == pytest.approx(ref, abs=1e-4), (ours_name, s["doc_id"])
            assert mine["acc"] == s["acc"], (ours_name, s["doc_id"])
        if ours_name == "mmlu":  # the very same 5-shot prompt, character for character
            from fmforge.eval.tasks import registry

            mine_items = registry()["mmlu"].load(mmlu)
            for it, s in zip(mine_items, theirs):
                assert [tuple(a) for a in s["arguments"]] == it.requests
        assert metrics[ours_name]["acc"] == out["results"][theirs_name]["acc,none"], ours_name


def test_the_gpu_benchmark_runs_on_a_cpu_in_tiny_form(tmp_path):
    """benchmarks/eval_harness.py (run on the GPU machine by the lead) works end to end."""
    pytest.importorskip("lm_eval")
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    p = subprocess.run([sys.executable, str(root / "benchmarks" / "eval_harness.py"), "--out", str(tmp_path),
                        "--device", "cpu", "--tiny", "--items", "8"], capture_output=True, text=True, timeout=600,
                       env={**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads((tmp_path / "eval_harness.json").read_text())
    assert res["items"] == 8 and res["acc_identical_fp32"] and res["max_abs_loglik_diff_fp32"] < 1e-4
    assert set(res["seconds"]) == {"fmforge_fp32", "lm_eval_fp32"}
