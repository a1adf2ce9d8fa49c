"""`fmforge serve` from outside: the official `openai` SDK (and plain HTTP) against a server
on a free loopback port (uvicorn in a thread), a tiny random model with a real BPE
tokenizer. Expected tokens come from transformers running the exported HF copy of the same
model, never from the server's own code."""
from __future__ import annotations

import asyncio
import json
import shutil
import socket
import statistics
import subprocess
import threading
import time
from types import SimpleNamespace

import httpx
import pytest
import torch

from fmforge.config import ModelConfig, ServeConfig
from fmforge.export.writer import export_hf
from fmforge.model.transformer import Transformer
from fmforge.model.weights import save_model
from fmforge.tokenizer.bpe import EOT, PAD

openai = pytest.importorskip("openai")
transformers = pytest.importorskip("transformers")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

KEY = "sk-test-123"
TEXT = ["the quick brown fox jumps over the lazy dog " * 20, "hello world, this is fmforge. " * 20,
        "a cat sat on the mat and the dog ran to the park " * 10]
ROLES = ["<|system|>", "<|user|>", "<|assistant|>"]


def make_model(root):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(TEXT, trainers.BpeTrainer(vocab_size=320, special_tokens=[EOT, PAD, *ROLES],
                                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    cfg = ModelConfig(vocab_size=320, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, context_length=128,
                      init_std=0.1, qk_norm=True)
    torch.manual_seed(0)
    net = Transformer(cfg)
    mdir = root / "run" / "train"
    mdir.mkdir(parents=True)
    save_model(net.state_dict(), cfg, mdir)
    tok.save(str(mdir / "tokenizer.json"))
    (root / "hf").mkdir()
    export_hf(root / "run", root / "hf")
    return net.eval(), tok


def start(app):
    import uvicorn
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    th = threading.Thread(target=server.run, daemon=True)
    th.start()
    t0 = time.time()
    while not server.started:
        assert time.time() - t0 < 30, "server did not start"
        time.sleep(0.02)

    def stop():
        server.should_exit = True
        th.join(10)
    return f"http://127.0.0.1:{port}", stop


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from fmforge.serve.api import create_app
    from fmforge.serve.load import build_service
    root = tmp_path_factory.mktemp("serve")
    net, tok = make_model(root)
    svc = build_service(root / "run", ServeConfig(max_batch=16, device="cpu"), KEY, "tiny")
    base, stop = start(create_app(svc))
    hf = transformers.AutoModelForCausalLM.from_pretrained(root / "hf", dtype=torch.float32).eval()
    client = openai.OpenAI(base_url=base + "/v1", api_key=KEY, max_retries=0, timeout=60)
    yield SimpleNamespace(base=base, svc=svc, tok=tok, net=net, hf=hf, hf_dir=root / "hf", client=client, root=root)
    stop()
    svc.sched.close()


def hf_greedy(s, ids: list[int], n: int, stop_ids: list[int]) -> list[int]:
    """transformers' greedy continuation, ending before the first stop token."""
    with torch.no_grad():
        out = s.hf.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                            max_new_tokens=n, do_sample=False, eos_token_id=stop_ids, pad_token_id=stop_ids[0])
    new = out[0, len(ids):].tolist()
    cut = next((i for i, t in enumerate(new) if t in stop_ids), len(new))
    return new[:cut]


def eot(s):
    return s.tok.token_to_id(EOT)


def text_of(s, ids):
    return s.tok.decode(ids, skip_special_tokens=False)


PROMPT = "the quick brown"


def test_models_health_tokenize(served):
    s = served
    assert [m.id for m in s.client.models.list().data] == ["tiny"]
    assert httpx.get(s.base + "/health").json() == {"status": "ok"}
    h = {"Authorization": f"Bearer {KEY}"}
    r = httpx.post(s.base + "/tokenize", json={"prompt": PROMPT}, headers=h).json()
    assert r["tokens"] == s.tok.encode(PROMPT).ids and r["max_model_len"] == 128
    assert httpx.post(s.base + "/detokenize", json={"tokens": r["tokens"]}, headers=h).json()["prompt"] == PROMPT


def test_greedy_completion_equals_transformers(served):
    s = served
    ids = s.tok.encode(PROMPT).ids
    want = hf_greedy(s, ids, 20, [eot(s)])
    r = s.client.completions.create(model="tiny", prompt=PROMPT, max_tokens=20, temperature=0)
    assert r.choices[0].text == text_of(s, want)
    assert r.usage.prompt_tokens == len(ids) and r.usage.completion_tokens == len(want)
    assert r.choices[0].finish_reason == ("length" if len(want) == 20 else "stop")
    # token-id prompts, several at once, give the same as one by one
    r2 = s.client.completions.create(model="tiny", prompt=[ids, ids[:2]], max_tokens=20, temperature=0)
    assert r2.choices[0].text == r.choices[0].text
    assert r2.choices[1].text == text_of(s, hf_greedy(s, ids[:2], 20, [eot(s)]))


def test_chat_equals_transformers_with_the_chat_template(served):
    s = served
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello world"}]
    htok = transformers.AutoTokenizer.from_pretrained(s.hf_dir)
    ids = htok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
    ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
    stops = [eot(s)] + [s.tok.token_to_id(r) for r in ROLES]
    want = text_of(s, hf_greedy(s, list(ids), 24, stops))
    r = s.client.chat.completions.create(model="tiny", messages=msgs, max_tokens=24, temperature=0)
    assert r.choices[0].message.role == "assistant" and r.choices[0].message.content == want
    chunks = list(s.client.chat.completions.create(model="tiny", messages=msgs, max_tokens=24, temperature=0,
                                                   stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == want
    assert chunks[-1].usage.completion_tokens == r.usage.completion_tokens
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == r.choices[0].finish_reason


def test_streaming_completion_ends_with_done(served):
    s = served
    full = s.client.completions.create(model="tiny", prompt=PROMPT, max_tokens=30, temperature=0).choices[0].text
    parts = list(s.client.completions.create(model="tiny", prompt=PROMPT, max_tokens=30, temperature=0,
                                             stream=True, stream_options={"include_usage": True}))
    assert "".join(p.choices[0].text for p in parts if p.choices) == full
    assert len([p for p in parts if p.choices]) > 2  # really streamed, not one piece
    raw = httpx.post(s.base + "/v1/completions", headers={"Authorization": f"Bearer {KEY}"},
                     json={"prompt": PROMPT, "max_tokens": 5, "stream": True}).text
    events = [e for e in raw.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"


def test_echo_logprobs_are_the_prompt_token_logprobs(served):
    """The request lm-eval's local-completions sends: echo, logprobs=1, max_tokens 1 (and 0)."""
    s = served
    ids = s.tok.encode("hello world, this is the lazy dog").ids
    with torch.no_grad():
        lp = s.hf(torch.tensor([ids])).logits[0].float().log_softmax(-1)
    want = [lp[t - 1, ids[t]].item() for t in range(1, len(ids))]
    for mt in (1, 0):
        r = s.client.completions.create(model="tiny", prompt=ids, max_tokens=mt, temperature=0, logprobs=1, echo=True)
        got = r.choices[0].logprobs
        assert got.token_logprobs[0] is None and len(got.token_logprobs) == len(ids) + mt
        assert max(abs(a - b) for a, b in zip(got.token_logprobs[1:len(ids)], want)) < 1e-4
        for t in range(1, len(ids)):  # top-1 is the argmax, exactly the token's own value when greedy
            best = lp[t - 1].argmax().item()
            (tok_str, v), = got.top_logprobs[t].items()
            assert abs(v - lp[t - 1, best].item()) < 1e-4
        assert r.choices[0].text.startswith(text_of(s, ids))


def test_seed_reproducible_and_n_choices(served):
    s = served
    kw = dict(model="tiny", prompt=PROMPT, max_tokens=24, temperature=1.0, top_p=0.95, extra_body={"top_k": 50})
    a = s.client.completions.create(seed=42, **kw).choices[0].text
    b = s.client.completions.create(seed=42, **kw).choices[0].text
    c = s.client.completions.create(seed=43, **kw).choices[0].text
    assert a == b and a != c
    r = s.client.completions.create(seed=7, n=3, **kw)
    assert [ch.index for ch in r.choices] == [0, 1, 2] and len({ch.text for ch in r.choices}) > 1
    assert r.usage.prompt_tokens == 3 * len(s.tok.encode(PROMPT).ids)


def test_stop_strings(served):
    s = served
    full = s.client.completions.create(model="tiny", prompt=PROMPT, max_tokens=40, temperature=0).choices[0].text
    k = next((i for i in range(1, len(full) - 2) if full[i:i + 2].isascii() and full[i:i + 2].isprintable()), None)
    if k is None:
        pytest.skip("the random model's greedy text has no printable pair to stop at")
    stop = full[k:k + 2]
    r = s.client.completions.create(model="tiny", prompt=PROMPT, max_tokens=40, temperature=0, stop=[stop])
    assert r.choices[0].text == full[:full.find(stop)] and r.choices[0].finish_reason == "stop"


def _err(r, status, param=None):
    assert r.status_code == status, r.text
    e = r.json()["error"]
    assert set(e) == {"message", "type", "param", "code"} and e["message"]
    if param:
        assert e["param"] == param
    return e


def test_errors_400_401(served):
    s = served
    h = {"Authorization": f"Bearer {KEY}"}
    post = lambda body, headers=h: httpx.post(s.base + "/v1/completions", json=body, headers=headers)  # noqa: E731
    _err(post({"prompt": "x", "max_tokens": -1}), 400, "max_tokens")
    _err(post({"prompt": "x", "temperature": 3}), 400, "temperature")
    assert _err(post({"prompt": list(range(1, 127)), "max_tokens": 10}), 400)["code"] == "context_length_exceeded"
    _err(post({"prompt": [5000]}), 400, "prompt")
    _err(httpx.post(s.base + "/v1/completions", content=b"{not json", headers=h), 400)
    _err(httpx.post(s.base + "/v1/chat/completions", json={"messages": [{"role": "robot", "content": "x"}]},
                    headers=h), 400, "messages")
    assert _err(post({"prompt": "x"}, {}), 401)["code"] == "invalid_api_key"
    _err(post({"prompt": "x"}, {"Authorization": "Bearer wrong"}), 401)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=s.base + "/v1", api_key="wrong", max_retries=0).models.list()
    with pytest.raises(openai.BadRequestError):
        s.client.completions.create(model="tiny", prompt="x", max_tokens=-5)
    for route in ("/tokenize", "/detokenize"):
        _err(httpx.post(s.base + route, content=b"{not json", headers=h), 400)
        _err(httpx.post(s.base + route, json={"x": 1}, headers=h), 400)
    _err(httpx.post(s.base + "/detokenize", json={"tokens": [5000]}, headers=h), 400, "prompt")
    # the server is still fine
    assert s.client.completions.create(model="tiny", prompt="x", max_tokens=2).choices


def scrape(base: str) -> dict:
    """Prometheus text exposition -> {'name{labels}': value}; every sample line must parse."""
    out = {}
    for line in httpx.get(base + "/metrics").text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


def test_metrics_count_requests_tokens_and_latency(served):
    s = served
    before = scrape(s.base)
    ids = s.tok.encode(PROMPT).ids
    r = s.client.completions.create(model="tiny", prompt=PROMPT, max_tokens=7, temperature=0, n=2,
                                    extra_body={"ignore_eos": True})
    after = scrape(s.base)
    d = lambda k: after.get(k, 0) - before.get(k, 0)  # noqa: E731
    assert r.usage.completion_tokens == 14
    assert d('fmforge_requests_total{outcome="length"}') == 2  # one per choice
    assert d("fmforge_prompt_tokens_total") == 2 * len(ids) and d("fmforge_generation_tokens_total") == 14
    assert after["fmforge_queue_depth"] == 0 and after["fmforge_running_sequences"] == 0
    for h in ("fmforge_time_to_first_token_seconds", "fmforge_request_latency_seconds"):
        assert d(h + "_count") == 2 and d(h + "_sum") > 0
        buckets = [(float(k.split('le="')[1].rstrip('"}')), v) for k, v in after.items()
                   if k.startswith(h + "_bucket")]
        counts = [v for _, v in sorted(buckets)]
        assert counts == sorted(counts) and counts[-1] == after[h + "_count"]  # cumulative, +Inf = all
    assert d('fmforge_request_latency_seconds_bucket{le="+Inf"}') == 2


class GatedEngine:
    """A real Engine whose prefill / decode wait for the test to open a gate: puts the
    scheduler in a known state (a request held in a slot, others queued) without timing."""

    def __init__(self, engine):
        self.engine, self.prefill_gate, self.decode_gate = engine, threading.Event(), threading.Event()
        self.in_prefill, self.in_decode = threading.Event(), threading.Event()

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def prefill(self, *a):
        self.in_prefill.set()
        self.prefill_gate.wait(30)
        return self.engine.prefill(*a)

    def decode(self, *a):
        self.in_decode.set()
        self.decode_gate.wait(30)
        return self.engine.decode(*a)

    def decode_greedy(self, *a):
        self.in_decode.set()
        self.decode_gate.wait(30)
        return self.engine.decode_greedy(*a)


@pytest.fixture
def gated(served):
    from fmforge.serve.api import create_app
    from fmforge.serve.engine import Engine
    from fmforge.serve.scheduler import Scheduler
    from fmforge.serve.service import Service
    eng = GatedEngine(Engine(served.net, 1, 128))
    sched = Scheduler(eng, lambda ids: served.tok.decode(ids), max_queue=1)
    svc = Service(sched, served.tok, "tiny", None, eot(served))
    base, stop = start(create_app(svc))
    yield SimpleNamespace(base=base, eng=eng, sched=sched)
    eng.prefill_gate.set()
    eng.decode_gate.set()
    stop()
    sched.close()


def test_queue_full_is_503_then_both_finish(gated):
    g = gated
    results = {}

    def call(name):
        results[name] = httpx.post(g.base + "/v1/completions", json={"prompt": "hello", "max_tokens": 3}, timeout=60)
    t1 = threading.Thread(target=call, args=("first",))
    t1.start()
    assert g.eng.in_prefill.wait(10)  # the first request holds the engine
    t2 = threading.Thread(target=call, args=("second",))
    t2.start()
    t0 = time.time()
    while g.sched.metrics.queue_depth < 1:  # the second waits in the queue (limit 1)
        assert time.time() - t0 < 10
        time.sleep(0.01)
    r = httpx.post(g.base + "/v1/completions", json={"prompt": "hello", "max_tokens": 3})
    assert _err(r, 503)["code"] == "queue_full"
    g.eng.prefill_gate.set()
    g.eng.decode_gate.set()
    t1.join(30)
    t2.join(30)
    assert results["first"].status_code == 200 and results["second"].status_code == 200
    assert 'fmforge_requests_total{outcome="rejected"} 1' in httpx.get(g.base + "/metrics").text


def test_client_disconnect_cancels_the_request(gated):
    g = gated
    g.eng.prefill_gate.set()
    with httpx.Client(timeout=30) as c:
        with c.stream("POST", g.base + "/v1/chat/completions",
                      json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 100, "stream": True,
                            "ignore_eos": True}) as r:
            lines = r.iter_lines()  # held: a dropped iterator closes the response, i.e. disconnects at once
            assert next(lines).startswith("data: ")
            assert g.eng.in_decode.wait(10)  # running, held in its first decode step
    # connection closed: the server notices and marks the sequence cancelled while the engine is
    # still held in its first decode step (releasing decode first let a fast engine finish all
    # 100 tokens before the server saw the disconnect: a race, seen on a loaded machine) ...
    t0 = time.time()
    while not any(s.cancelled for s in list(g.sched.running)):
        assert time.time() - t0 < 20, "the server did not notice the disconnect"
        time.sleep(0.02)
    # ... then the step ends, the scheduler retires it and frees the slot
    g.eng.decode_gate.set()
    while g.sched.metrics.requests.get("cancelled", 0) < 1:
        assert time.time() - t0 < 20, g.sched.metrics.requests
        time.sleep(0.05)
    assert not g.sched.running and g.sched.metrics.generation_tokens < 100
    m = httpx.get(g.base + "/metrics").text
    assert 'fmforge_requests_total{outcome="cancelled"} 1' in m and "fmforge_running_sequences 0" in m


def test_load_64_concurrent_streaming_clients(served, capsys):
    s = served
    prompts = [f"the {w} dog" for w in ("quick", "lazy", "brown", "small", "old", "park", "cat", "mat")]
    want = {p: text_of(s, hf_greedy(s, s.tok.encode(p).ids, 16, [eot(s)])) for p in prompts}
    client = openai.AsyncOpenAI(base_url=s.base + "/v1", api_key=KEY, max_retries=0, timeout=120)

    async def one(i):
        p = prompts[i % len(prompts)]
        t0 = time.perf_counter()
        text, reason = "", None
        async for ch in await client.completions.create(model="tiny", prompt=p, max_tokens=16, temperature=0,
                                                        stream=True):
            text += ch.choices[0].text
            reason = ch.choices[0].finish_reason or reason
        return p, text, reason, time.perf_counter() - t0

    async def main():
        try:
            return await asyncio.gather(*(one(i) for i in range(64)))
        finally:
            await client.close()
    t0 = time.perf_counter()
    res = asyncio.run(main())
    wall = time.perf_counter() - t0
    assert all(text == want[p] and reason in ("stop", "length") for p, text, reason, _ in res)
    lat = sorted(r[3] for r in res)
    with capsys.disabled():  # the report shows in every run, not only with -s
        print(f"\n64 streaming clients: wall {wall:.2f}s, latency p50 {statistics.median(lat):.3f}s "
              f"p99 {lat[min(63, round(0.99 * 64))]:.3f}s")


CHROMIUM = "/usr/bin/chromium" if shutil.os.path.exists("/usr/bin/chromium") else None
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.mark.skipif(CHROMIUM is None or not shutil.os.path.exists(DRIVER),
                    reason="no Chromium + chromedriver (/usr/bin/chromium; Debian: apt-get install chromium "
                           "chromium-driver)")
def test_chat_page_in_a_real_browser(served, tmp_path):
    """Headless Chromium, driven over the W3C WebDriver protocol (chromedriver; plain HTTP, no
    selenium), loads /, types a message, clicks Send and sees the reply stream into the page:
    the text grows over several polls and ends as the API's own greedy reply."""
    s = served
    msgs = [{"role": "user", "content": "hello world"}]
    want = s.client.chat.completions.create(model="tiny", messages=msgs, temperature=0).choices[0].message.content
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    drv = subprocess.Popen([DRIVER, f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wd = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
    try:
        for _ in range(200):
            try:
                if wd.get("/status").json()["value"]["ready"]:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        caps = {"capabilities": {"alwaysMatch": {"goog:chromeOptions": {"binary": CHROMIUM, "args": [
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            f"--user-data-dir={tmp_path / 'profile'}"]}}}}
        sid = wd.post("/session", json=caps).json()["value"]["sessionId"]

        def js(script, *args):
            return wd.post(f"/session/{sid}/execute/sync", json={"script": script, "args": list(args)}).json()["value"]

        def el(css):
            v = wd.post(f"/session/{sid}/element", json={"using": "css selector", "value": css}).json()["value"]
            return next(iter(v.values()))
        try:
            wd.post(f"/session/{sid}/url", json={"url": f"{s.base}/?key={KEY}"})
            js("document.getElementById('temperature').value = '0';")
            t0 = time.time()
            while js("return document.getElementById('model').textContent") != "tiny":
                assert time.time() - t0 < 20, "the page did not list the model"
                time.sleep(0.05)
            wd.post(f"/session/{sid}/element/{el('#input')}/value", json={"text": "hello world"})
            wd.post(f"/session/{sid}/element/{el('#send')}/click", json={})
            seen = []
            while True:
                state = js("const m = document.querySelector('.msg.assistant, .msg.error');"
                           "return m ? [m.className, m.textContent, m.dataset.done || ''] : null")
                if state:
                    seen.append(state[1])
                    if state[2] == "1" or "error" in state[0]:
                        break
                assert time.time() - t0 < 60, seen[-1:]
                time.sleep(0.005)
            assert state[0] == "msg assistant" and state[1] == want
            assert js("return document.querySelector('.msg.user').textContent") == "hello world"
        finally:
            wd.delete(f"/session/{sid}")
    finally:
        wd.close()
        drv.terminate()
        drv.wait(10)


TASK = """task: fmforge_tiny_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{query}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{gold}}}}"
metric_list:
  - metric: acc
"""


@pytest.mark.slow
def test_lm_eval_local_completions_matches_fmforge_eval(served, tmp_path, monkeypatch):
    """lm-eval's `local-completions` against the server scores a local multiple-choice task
    (the `{query, choices, gold}` format, scored as fmforge's openbook_qa: the query as
    given, " " + choice) exactly as `fmforge eval` and lm-eval's `hf` model score the same
    model: same accuracy, and every choice's log-likelihood within 1e-4."""
    lm_eval = pytest.importorskip("lm_eval")
    from lm_eval.tasks import TaskManager
    from typer.testing import CliRunner
    from fmforge.cli import app
    s = served
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    words = ["fox", "dog", "cat", "mat", "park", "world"]
    stems = ["the quick brown", "the lazy", "a cat sat on the", "hello", "the dog ran to the", "jumps over the",
             "this is", "a small"]
    docs = [{"query": q, "choices": words[i % 3:i % 3 + 4], "gold": i % 4} for i, q in enumerate(stems)]
    data = tmp_path / "mc.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in docs))
    (tmp_path / "task").mkdir()
    (tmp_path / "task" / "mc.yaml").write_text(TASK.format(data=data))
    tm = TaskManager(include_path=str(tmp_path / "task"))

    def run(model, args):
        r = lm_eval.simple_evaluate(model=model, model_args=args, tasks=["fmforge_tiny_mc"], task_manager=tm,
                                    batch_size=1, device="cpu", log_samples=True)
        samples = r["samples"]["fmforge_tiny_mc"]
        return r["results"]["fmforge_tiny_mc"]["acc,none"], \
            {x["doc_id"]: [float(resp[0][0]) for resp in x["resps"]] for x in samples}
    acc_api, ll_api = run("local-completions", f"model=tiny,base_url={s.base}/v1/completions,tokenizer={s.hf_dir},"
                                               "tokenizer_backend=huggingface,tokenized_requests=True,"
                                               "num_concurrent=1,max_retries=1,max_length=128")
    acc_hf, ll_hf = run("hf", f"pretrained={s.hf_dir},dtype=float32,max_length=128")
    r = CliRunner().invoke(app, ["eval", "--model", str(s.hf_dir), "--task", f"openbook_qa={data}",
                                 "--out", str(tmp_path / "ev"), "--per-item", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    acc_fm = json.loads((tmp_path / "ev" / "eval.json").read_text())["tasks"]["openbook_qa"]["acc"]
    items = [json.loads(x) for x in (tmp_path / "ev" / "items" / "openbook_qa.jsonl").read_text().splitlines()]
    ll_fm = dict(enumerate(it["loglik"] for it in items))
    assert acc_api == acc_fm == acc_hf
    assert ll_api.keys() == ll_hf.keys() == ll_fm.keys() and len(ll_api) == len(docs)
    for other in (ll_hf, ll_fm):
        assert max(abs(a - b) for k in other for a, b in zip(ll_api[k], other[k])) < 1e-4


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_cli_serve_adapter_folds_lora_into_the_base(served, tmp_path):
    """`fmforge serve --adapter DIR` (a PEFT LoRA folder, base taken from the adapter's own
    record) serves base + adapter: greedy text equals PEFT's merged model's `generate`, and
    differs from the base's (the adapter's B matrices are random, not PEFT's zero init)."""
    import os
    import sys
    peft = pytest.importorskip("peft")
    s = served
    base = transformers.AutoModelForCausalLM.from_pretrained(s.hf_dir, dtype=torch.float32)
    torch.manual_seed(3)
    lora = peft.get_peft_model(base, peft.LoraConfig(r=4, lora_alpha=8, init_lora_weights=False,
                                                     target_modules=["q_proj", "v_proj", "down_proj"]))
    (tmp_path / "ft").mkdir()
    lora.save_pretrained(tmp_path / "ft" / "adapter")
    merged = lora.merge_and_unload().eval()
    ids = s.tok.encode(PROMPT).ids
    with torch.no_grad():
        out = merged.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                              max_new_tokens=12, min_new_tokens=12, do_sample=False, pad_token_id=eot(s))
    want = text_of(s, out[0, len(ids):].tolist())
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-m", "fmforge", "serve", "--adapter", str(tmp_path / "ft" / "adapter"),
                             "--port", str(port), "--set", "serve.device=cpu"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        t0 = time.time()
        while True:
            try:
                if httpx.get(url + "/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.stdout.read()
            assert time.time() - t0 < 120, "server did not start"
            time.sleep(0.2)
        client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=60)
        assert [m.id for m in client.models.list().data] == ["ft"]
        r = client.completions.create(model="ft", prompt=PROMPT, max_tokens=12, temperature=0,
                                      extra_body={"ignore_eos": True})
        assert r.choices[0].text == want
        plain = s.client.completions.create(model="tiny", prompt=PROMPT, max_tokens=12, temperature=0,
                                            extra_body={"ignore_eos": True})
        assert plain.choices[0].text != want
    finally:
        proc.terminate()
        proc.wait(20)


def test_cli_serve_needs_a_model_or_adapter(tmp_path):
    from typer.testing import CliRunner
    from fmforge.cli import app
    from fmforge.errors import UserError
    r = CliRunner().invoke(app, ["serve"])
    assert isinstance(r.exception, UserError) and "--adapter" in str(r.exception)
    r = CliRunner().invoke(app, ["serve", "--adapter", str(tmp_path / "missing")])
    assert isinstance(r.exception, UserError) and "missing" in str(r.exception)


def test_tokenize_a_chat_with_a_wrong_role_is_400(served):
    """/tokenize with a role the chat format lacks is the client's mistake: 400 naming
    `messages`, as /v1/chat/completions answers the same body (it was a 500)."""
    s = served
    h = {"Authorization": f"Bearer {KEY}"}
    body = {"messages": [{"role": "robot", "content": "x"}]}
    for route in ("/tokenize", "/v1/chat/completions"):
        assert "robot" in _err(httpx.post(s.base + route, json=body, headers=h), 400, "messages")["message"]


def test_a_seed_beyond_64_bits_is_400(served):
    """torch seeds a generator from a 64-bit integer; a larger JSON seed was a 500
    ('Overflow when unpacking long long'). OpenAI's seed is a 64-bit integer: 400 naming it."""
    s = served
    h = {"Authorization": f"Bearer {KEY}"}
    for seed in (2 ** 64, -(2 ** 63) - 1):
        _err(httpx.post(s.base + "/v1/completions", headers=h,
                        json={"prompt": "x", "max_tokens": 1, "temperature": 1, "seed": seed}), 400, "seed")
    # the ends of the range still sample, n > 1 too (choice i uses seed + i)
    for seed in (2 ** 63 - 1, -(2 ** 63)):
        r = httpx.post(s.base + "/v1/completions", headers=h,
                       json={"prompt": "x", "max_tokens": 1, "temperature": 1, "seed": seed, "n": 16})
        assert r.status_code == 200 and len(r.json()["choices"]) == 16, r.text


def test_cli_serve_refuses_a_port_in_use_before_loading_the_model(served, monkeypatch):
    """A port already taken was found by uvicorn only after the model loaded (minutes for a
    large one) and after 'serving ... on http://...' was printed, ending in exit 3; now it is
    a UserError naming --port, before anything loads."""
    from typer.testing import CliRunner
    import fmforge.serve.load
    from fmforge.cli import app
    from fmforge.errors import UserError

    def never(*a, **k):
        raise AssertionError("the model was loaded before the port was checked")
    monkeypatch.setattr(fmforge.serve.load, "build_service", never)
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    try:
        r = CliRunner().invoke(app, ["serve", "--model", str(served.root / "run"), "--port", str(port)])
    finally:
        busy.close()
    assert isinstance(r.exception, UserError), r.output
    assert f"--port {port}" in str(r.exception) and "serving" not in r.output


def test_values_of_the_wrong_json_type_are_400_not_coerced(served):
    """As OpenAI's API, a parameter of the wrong JSON type is refused, naming it: pydantic's lax
    mode read "5" as max_tokens 5, "yes" as stream true and true as logprobs 1."""
    s = served
    h = {"Authorization": f"Bearer {KEY}"}
    for field, value in (("max_tokens", "5"), ("max_tokens", 2.0), ("stream", "yes"), ("logprobs", True),
                         ("n", "2"), ("temperature", "0"), ("echo", 1), ("seed", "7")):
        _err(httpx.post(s.base + "/v1/completions", headers=h, json={"prompt": "x", field: value}), 400, field)
    _err(httpx.post(s.base + "/v1/chat/completions", headers=h,
                    json={"messages": [{"role": "user", "content": "x"}], "logprobs": "true"}), 400, "logprobs")
    # an integer where a number is asked is a number, as in JSON
    r = httpx.post(s.base + "/v1/completions", headers=h, json={"prompt": "x", "temperature": 0, "top_p": 1,
                                                                 "max_tokens": 1})
    assert r.status_code == 200, r.text


def test_an_unknown_model_is_404_model_not_found(served):
    """OpenAI and vLLM answer a model they do not serve with 404 (type invalid_request_error,
    code model_not_found, "The model `x` does not exist."); fmforge answered 400. The openai
    SDK raises NotFoundError for it."""
    s = served
    h = {"Authorization": f"Bearer {KEY}"}
    for route, body in (("/v1/completions", {"prompt": "x"}),
                        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}]})):
        e = _err(httpx.post(s.base + route, json={**body, "model": "gpt-4"}, headers=h), 404, "model")
        assert (e["type"], e["code"]) == ("invalid_request_error", "model_not_found")
        assert "The model `gpt-4` does not exist" in e["message"]
    with pytest.raises(openai.NotFoundError):
        s.client.completions.create(model="gpt-4", prompt="x", max_tokens=1)


def test_chat_top_logprobs_without_logprobs_is_400(served):
    """OpenAI refuses top_logprobs unless logprobs is true; fmforge ignored it and answered
    without log-probs. Now 400 naming top_logprobs; with logprobs: true it still works."""
    s = served
    h = {"Authorization": f"Bearer {KEY}"}
    chat = {"messages": [{"role": "user", "content": "x"}], "max_tokens": 1}
    for extra in ({"top_logprobs": 2}, {"top_logprobs": 2, "logprobs": False}):
        e = _err(httpx.post(s.base + "/v1/chat/completions", json={**chat, **extra}, headers=h), 400, "top_logprobs")
        assert e["code"] == "invalid_value" and "logprobs" in e["message"]
    r = httpx.post(s.base + "/v1/chat/completions", json={**chat, "top_logprobs": 2, "logprobs": True}, headers=h)
    assert r.status_code == 200 and len(r.json()["choices"][0]["logprobs"]["content"][0]["top_logprobs"]) == 2


def test_detokenize_refuses_booleans_as_token_ids(served):
    """/detokenize read {"tokens": [true]} as token 1 (a bool is an int in Python); token ids
    are integers, as the strict request models say elsewhere: 400 naming tokens."""
    s = served
    h = {"Authorization": f"Bearer {KEY}"}
    for tokens in ([True], [5, False]):
        _err(httpx.post(s.base + "/detokenize", json={"tokens": tokens}, headers=h), 400, "tokens")
    r = httpx.post(s.base + "/detokenize", json={"tokens": [s.tok.token_to_id(EOT)]}, headers=h)
    assert r.status_code == 200 and r.json()["prompt"] == EOT


def test_a_field_of_several_types_names_the_field_and_what_it_takes(served):
    """prompt (and stop, a message's content) take several JSON types; a wrong one answered
    pydantic's internal tag as param ("prompt.str") and the first alternative's message only
    ("Input should be a valid string"). Now param is the field, the message what it takes."""
    s = served
    h = {"Authorization": f"Bearer {KEY}"}
    prompt = "prompt must be a string, a list of strings, a list of token ids or a list of lists of token ids"
    user = lambda content: {"messages": [{"role": "user", "content": content}]}  # noqa: E731
    cases = [("/v1/completions", {"prompt": 5}, "prompt", prompt),
             ("/v1/completions", {"prompt": [1.5]}, "prompt", prompt),
             ("/v1/completions", {"prompt": [[1, "a"]]}, "prompt", prompt),
             ("/v1/completions", {"prompt": "x", "stop": [5]}, "stop", "stop must be a string or a list of strings"),
             ("/v1/chat/completions", user(5), "messages.0.content",
              "messages.0.content must be a string or a list of content parts"),
             ("/v1/chat/completions", user([5]), "messages.0.content",
              "messages.0.content must be a string or a list of content parts")]
    for route, body, param, message in cases:
        e = _err(httpx.post(s.base + route, json=body, headers=h), 400, param)
        assert (e["message"], e["code"]) == (message, "invalid_value"), body
    # a field's own check still says its own words
    assert "empty" in _err(httpx.post(s.base + "/v1/completions", json={"prompt": []}, headers=h), 400,
                           "prompt")["message"]


def test_every_bad_parameter_400_has_code_invalid_value(served):
    """docs/serve.md: 400 for bad parameters, `param` naming the field and `code` invalid_value;
    the checks made after validation (an empty prompt, a token id outside the vocabulary, a
    role the chat format lacks) answered code null."""
    s = served
    h = {"Authorization": f"Bearer {KEY}"}
    cases = [("/v1/completions", {"prompt": ""}, "prompt"), ("/v1/completions", {"prompt": [[]]}, "prompt"),
             ("/v1/completions", {"prompt": [5000]}, "prompt"), ("/detokenize", {"tokens": [5000]}, "prompt"),
             ("/v1/chat/completions", {"messages": [{"role": "robot", "content": "x"}]}, "messages"),
             ("/tokenize", {"x": 1}, "prompt"), ("/detokenize", {"tokens": "x"}, "tokens")]
    for route, body, param in cases:
        assert _err(httpx.post(s.base + route, json=body, headers=h), 400, param)["code"] == "invalid_value", body
