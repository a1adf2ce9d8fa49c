"""HumanEval execution: the sandbox holds, pass@k is the closed form."""
from __future__ import annotations

import socket
import threading
from math import comb

import pytest

from conftest import SHARED
from fmforge.eval.code import pass_at_k, score_completions, truncate
from fmforge.eval.sandbox import network_namespace_available, run_python
from fmforge.eval.tasks.humaneval import Problem, load


@pytest.mark.parametrize("n,c,k", [(1, 0, 1), (1, 1, 1), (10, 3, 1), (10, 3, 5), (20, 0, 5), (20, 19, 10),
                                   (200, 13, 100), (5, 5, 5), (7, 2, 7)])
def test_pass_at_k_is_the_closed_form(n, c, k):
    want = 1 - comb(n - c, k) / comb(n, k)  # C(n-c, k) is 0 when n-c < k
    assert pass_at_k(n, c, k) == pytest.approx(want, abs=1e-12)


def test_pass_at_k_refuses_k_above_n():
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 5)


def test_completion_is_cut_at_the_next_top_level_statement():
    assert truncate("    return x + 1\n\ndef other():\n    pass") == "    return x + 1\n"
    assert truncate("    return 1\nprint(f(2))") == "    return 1"


PROBLEM = Problem("t/0", "def add(a, b):\n", "add", "    return a + b\n",
                  "def check(f):\n    assert f(2, 3) == 5\n    assert f(-1, 1) == 0\n")


def test_hostile_completions_fail_safely_and_the_evaluator_goes_on(tmp_path):
    outside = tmp_path / "outside.txt"
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    accepted = []
    threading.Thread(target=lambda: accepted.append(server.accept()), daemon=True).start()
    hostile = {
        "spin": "    while True:\n        pass\n",
        "10 GB": "    x = bytearray(10 * 1024 ** 3)\n    return a + b\n",
        "write outside": f"    open({str(outside)!r}, 'w').write('pwned')\n    return a + b\n",
        "socket": f"    import socket\n    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n    return a + b\n",
        "child process": "    import subprocess\n    subprocess.run(['true'])\n    return a + b\n",
        "remove outside": f"    import os\n    os.remove({str(tmp_path / 'keep.txt')!r})\n    return a + b\n",
    }
    (tmp_path / "keep.txt").write_text("keep")
    rows = [{"task_id": k, "completions": [v]} for k, v in hostile.items()]
    rows.append({"task_id": "good", "completions": [PROBLEM.canonical_solution]})
    metrics, rows = score_completions([PROBLEM] * len(rows), rows, ks=(1,), timeout_s=3, memory_mb=512)
    status = {r["task_id"]: (r["passed"][0], r["status"][0]) for r in rows}
    assert status["spin"] == (False, "timeout")
    assert all(not status[k][0] and status[k][1] == "failed" for k in hostile if k != "spin"), status
    assert status["good"] == (True, "passed")  # the evaluator carried on
    assert metrics["pass@1"] == pytest.approx(1 / len(rows)) and metrics["n"] == len(rows)
    assert not outside.exists() and (tmp_path / "keep.txt").read_text() == "keep"
    assert not accepted  # nothing reached the listening socket
    server.close()


def test_network_is_cut_at_the_kernel_where_namespaces_exist():
    if not network_namespace_available():
        pytest.skip("unshare -rn not permitted here: the audit hook alone blocks sockets")
    # the program's network namespace has one interface, the loopback, and no route anywhere
    r = run_python("lines = open('/proc/net/dev').read().splitlines()[2:]\n"
                   "names = [l.split(':')[0].strip() for l in lines]\n"
                   "assert names == ['lo'], names\n"
                   "assert len(open('/proc/net/route').read().splitlines()) <= 1\n", timeout_s=5)
    assert r.passed, r.stderr


def test_a_sleeping_loop_is_killed_on_the_wall_clock_not_only_the_cpu_limit():
    r = run_python("import time\nwhile True:\n    time.sleep(0.01)\n", timeout_s=1)
    assert r.status == "timeout" and r.seconds < 5


def test_the_canonical_humaneval_solutions_pass_and_empty_ones_fail():
    path = SHARED / "eval" / "humaneval" / "HumanEval.jsonl.gz"
    if not path.is_file():
        pytest.skip(f"{path} absent")
    problems = load(path)[:12]
    good = [{"task_id": p.task_id, "completions": [p.canonical_solution]} for p in problems]
    m, rows = score_completions(problems, good, timeout_s=10, workers=2)
    assert m["pass@1"] == 1.0, [r["status"] for r in rows]
    bad = [{"task_id": p.task_id, "completions": ["    pass\n"]} for p in problems]
    assert score_completions(problems, bad, timeout_s=10)[0]["pass@1"] == 0.0


def test_several_greedy_samples_are_a_user_error_naming_the_settings():
    from fmforge.errors import UserError
    from fmforge.eval.code import evaluate_code

    with pytest.raises(UserError, match="eval.code_samples=3 needs eval.code_temperature"):
        evaluate_code(None, [], samples=3, temperature=0.0)
