"""Every figure the README quotes as measured comes from a result file that a benchmark wrote.

The README's "Measured" section is a list of claims; each item (a bullet or a paragraph) names
the result files it comes from (`benchmarks/results/NAME.json`). Every decimal figure in the
item (1.330, 55.9%, 12.4x, 8.9x-16.0x) must be one of the values in those files, rounded to
the digits shown, or, for a ratio (`x`), the quotient of two of them; a percentage may be a
fraction in the file, or the quotient of two of its figures, times 100. Integers (worker counts, page counts) are descriptions and are not
checked. The demo table in "What the demo does" is checked the same way against its file.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CITE = re.compile(r"benchmarks/results/([\w.\-]+\.json)")
# a decimal figure, optionally a ratio or percentage; thousands separators inside integers parts
FIGURE = re.compile(r"(?<![\w.])(\d[\d,]*\.\d+)\s*(x|%)?(?![\w.])")


def section(text: str, heading: str) -> str:
    m = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert m, f"README has no '## {heading}' section"
    return m.group(1)


def items(body: str) -> list[str]:
    """Bullets and paragraphs: a new item at each '- ' line or after a blank line."""
    out: list[str] = []
    for line in body.splitlines():
        if line.startswith("- ") or not out or (not line.strip()):
            out.append("")
        out[-1] += line + "\n"
    return [i for i in out if i.strip()]


def leaves(obj) -> list[float]:
    if isinstance(obj, dict):
        return [v for x in obj.values() for v in leaves(x)]
    if isinstance(obj, list):
        return [v for x in obj for v in leaves(x)]
    if isinstance(obj, (int, float)) and not isinstance(obj, bool):
        return [float(obj)]
    return []


def figures(item: str) -> list[tuple[str, float, int, str]]:
    """(as written, value, decimals, unit) for each decimal figure; '8.9x-16.0x' gives two."""
    out = []
    for m in FIGURE.finditer(item):
        raw, unit = m.group(1), m.group(2) or ""
        digits = raw.split(".")[1]
        out.append((m.group(0).strip(), float(raw.replace(",", "")), len(digits), unit))
    return out


def matches(value: float, decimals: int, unit: str, values: list[float]) -> bool:
    def same(v: float) -> bool:
        return abs(round(v, decimals) - value) < 10 ** -(decimals + 3)

    if any(same(v) for v in values):
        return True
    if unit == "%" and any(same(v * 100) for v in values):
        return True
    if unit in ("x", "%"):  # a ratio of two figures (a share, for a percentage)
        scale = 100 if unit == "%" else 1
        nz = [v for v in values if v]
        return any(same(scale * a / b) for a in nz for b in nz if a is not b)
    return False


def check(item: str) -> list[str]:
    cited = CITE.findall(item)
    problems = []
    if not cited:
        return [f"no result file cited for: {item.strip()[:80]}..."]
    values: list[float] = []
    for name in cited:
        path = ROOT / "benchmarks" / "results" / name
        if not path.exists():
            problems.append(f"cited file missing: {name}")
            continue
        values += leaves(json.loads(path.read_text()))
    for shown, value, decimals, unit in figures(item):
        if not matches(value, decimals, unit, values):
            problems.append(f"{shown!r} is in none of {cited}")
    return problems


README = (ROOT / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("n", range(len(items(section(README, "Measured")))))
def test_every_measured_figure_is_in_its_result_file(n):
    item = items(section(README, "Measured"))[n]
    if not figures(item):  # an introduction ("On one H200 ...:")
        return
    assert not check(item), check(item)


def test_demo_table_is_the_demo_result_file():
    body = section(README, "What the demo does")
    cited = CITE.findall(body)
    assert cited, "the demo section names its result file"
    start = body.index("```")
    table = body[start: body.index("```", start + 3)]
    item = table + f"\n(benchmarks/results/{cited[0]})"
    assert figures(item) and not check(item), check(item)


def test_the_checker_catches_a_figure_that_is_in_no_file(tmp_path):
    """The guard itself: a changed digit, an uncited item and a wrong ratio are all reported."""
    name = sorted((ROOT / "benchmarks" / "results").glob("*.json"))[0].name
    values = leaves(json.loads((ROOT / "benchmarks" / "results" / name).read_text()))
    v = next(x for x in values if 1 < abs(x) < 1e6 and x != int(x))
    good = f"- a figure {v:.3f} (benchmarks/results/{name})"
    assert check(good) == []
    bad = f"- a figure {v + 0.5:.3f} (benchmarks/results/{name})"
    assert check(bad) and "is in none of" in check(bad)[0]
    assert "no result file cited" in check("- a figure 1.234 with no file")[0]
    assert check(f"- a ratio 987654.3x (benchmarks/results/{name})")
    assert [f[1] for f in figures("8.9x-16.0x and 1,532.5 tok/s, 55.9%")] == [8.9, 16.0, 1532.5, 55.9]


def test_the_demo_recipe_and_the_readme_quote_the_measured_demo_time():
    """Both say how long the demo takes: the `fmforge run` wall time of the README's demo result
    file, in whole minutes."""
    cited = CITE.findall(section(README, "What the demo does"))[0]
    minutes = round(json.loads((ROOT / "benchmarks" / "results" / cited).read_text())["wall_s"]["run"] / 60)
    readme = re.search(r"took (\d+) minutes", section(README, "What the demo does"))
    recipe = re.search(r"about (\d+) minutes", (ROOT / "recipes" / "demo.yaml").read_text(encoding="utf-8"))
    assert readme and int(readme.group(1)) == minutes
    assert recipe and int(recipe.group(1)) == minutes, f"recipes/demo.yaml says {recipe and recipe.group(0)}"
