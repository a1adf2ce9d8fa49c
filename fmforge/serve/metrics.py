"""Server metrics in Prometheus' text exposition format (counters, gauges, histograms),
kept by the scheduler thread and read by GET /metrics. Small enough not to need a client
library: a histogram is cumulative bucket counts, a sum and a count."""
from __future__ import annotations

import threading

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class Histogram:
    def __init__(self, buckets=LATENCY_BUCKETS):
        self.buckets, self.counts, self.sum, self.count = buckets, [0] * len(buckets), 0.0, 0

    def observe(self, v: float) -> None:
        for i, b in enumerate(self.buckets):
            if v <= b:
                self.counts[i] += 1
        self.sum += v
        self.count += 1


class Metrics:
    def __init__(self):
        self.lock = threading.Lock()
        self.requests: dict[str, int] = {}  # by outcome: stop, length, cancelled, error, rejected
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.queue_depth = 0
        self.running = 0
        self.ttft = Histogram()
        self.e2e = Histogram()

    def finished(self, outcome: str, ttft: float | None, e2e: float) -> None:
        with self.lock:
            self.requests[outcome] = self.requests.get(outcome, 0) + 1
            if ttft is not None:
                self.ttft.observe(ttft)
            self.e2e.observe(e2e)

    def count(self, outcome: str) -> None:
        with self.lock:
            self.requests[outcome] = self.requests.get(outcome, 0) + 1

    def render(self) -> str:
        with self.lock:
            lines = ["# HELP fmforge_requests_total Requests finished, by outcome.",
                     "# TYPE fmforge_requests_total counter"]
            lines += [f'fmforge_requests_total{{outcome="{k}"}} {v}' for k, v in sorted(self.requests.items())]
            for name, v, kind, help_ in (
                    ("fmforge_prompt_tokens_total", self.prompt_tokens, "counter", "Prompt tokens prefilled."),
                    ("fmforge_generation_tokens_total", self.generation_tokens, "counter", "Tokens generated."),
                    ("fmforge_queue_depth", self.queue_depth, "gauge", "Requests waiting for a slot."),
                    ("fmforge_running_sequences", self.running, "gauge", "Sequences in the running batch.")):
                lines += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}", f"{name} {v}"]
            for name, h, help_ in (("fmforge_time_to_first_token_seconds", self.ttft, "Submit to first token."),
                                   ("fmforge_request_latency_seconds", self.e2e, "Submit to last token.")):
                lines += [f"# HELP {name} {help_}", f"# TYPE {name} histogram"]
                lines += [f'{name}_bucket{{le="{b}"}} {c}' for b, c in zip(h.buckets, h.counts)]
                lines += [f'{name}_bucket{{le="+Inf"}} {h.count}', f"{name}_sum {h.sum}", f"{name}_count {h.count}"]
            return "\n".join(lines) + "\n"
