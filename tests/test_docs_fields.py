"""Every recipe field a user can set is documented in docs/*.md (LOG.md, the lab notebook, aside).

The fields are the leaves of the typed recipe (`fmforge.config.Recipe`), walked through its nested
sections (`model_fields`), each named by its dotted path: `data.gopher.min_words`,
`train.parallel.timeout_s`, `name`. A field counts as documented when a doc has

1. its full dotted path in backticks (`data.near_dedup.verify`, `--set train.seed=3`), delimited
   by anything but a word character or a dot, so `data.gopher.*` documents no field of
   data.gopher; or
2. its path relative to an enclosing section S in backticks (`min_words`, `gopher.min_words`),
   in a table's first column or a column headed "settings", or in a list item (with its
   indented continuation lines), under a heading whose block (the text up to the next heading)
   names S: in backticks as `S`, `S:`, `S.*` or
   `S.…` in the heading, or as `S:`, `S.*`, `S.…` or "`S` section" in the block's text; or
3. its path as a key of a fenced ```yaml example (`eval:` / `  every_steps: 500`).

The first form is the one to use in prose; the second is the `field | default | meaning` table
under a heading such as "## Recipe fields (`tokenizer:`)" or a list after "The `train:` section".
"""
from __future__ import annotations

import re
from pathlib import Path

import yaml
from pydantic import BaseModel

from fmforge.config import Recipe

DOCS = Path(__file__).resolve().parents[1] / "docs"


def recipe_fields(model: type[BaseModel] = Recipe, prefix: str = "") -> list[str]:
    out = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out += recipe_fields(ann, f"{prefix}{name}.")
        else:
            out.append(prefix + name)
    return out


def doc_texts() -> dict[str, str]:
    return {p.name: p.read_text(encoding="utf-8") for p in sorted(DOCS.glob("*.md")) if p.name != "LOG.md"}


FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
SPAN = re.compile(r"`((?:[^`\n]|\n(?![ \t]*\n))+)`")  # a code span may wrap, not cross a blank line


def _bounded(path: str) -> re.Pattern:
    return re.compile(r"(?<![\w.])" + re.escape(path) + r"(?![\w.])")


def _yaml_paths(node, prefix: str = "") -> set[str]:
    if not isinstance(node, dict):
        return set()
    out = set()
    for k, v in node.items():
        out.add(f"{prefix}{k}")
        out |= _yaml_paths(v, f"{prefix}{k}.")
    return out


def _blocks(text: str) -> list[tuple[str, str]]:
    """(heading, body) for each heading's block; body without fenced code. Text before the first
    heading is a block with an empty heading."""
    text = FENCE.sub("", text)
    out, heading, body = [], "", []
    for line in text.splitlines():
        if re.match(r"#{1,6} ", line):
            out.append((heading, "\n".join(body)))
            heading, body = line, []
        else:
            body.append(line)
    out.append((heading, "\n".join(body)))
    return out


def _names_section(heading: str, body: str, section: str) -> bool:
    s = re.escape(section)
    in_heading = rf"`{s}(:|\.\*|\.…)?`"
    in_body = rf"`{s}(:|\.\*|\.…)`|`{s}` section"
    return bool(re.search(in_heading, heading) or re.search(in_body, body))


def _listed_lines(body: str) -> list[str]:
    """List items (an item with its indented continuation lines) and, of table rows, the cells
    that name fields: the first, and those of a column headed "settings"."""
    out, in_item, header = [], False, None
    for line in body.splitlines():
        if line.lstrip().startswith("|"):
            cells = line.strip().strip("|").split(" | ")
            if header is None:
                header = [i for i, c in enumerate(cells) if i == 0 or "setting" in c]
            elif not set(line) <= set("|-: "):
                out += [cells[i] for i in header if i < len(cells)]
            in_item = False
            continue
        header = None
        if re.match(r"\s*([-*+]|\d+\.) ", line):
            out.append(line)
            in_item = True
        elif in_item and line.startswith(" ") and line.strip():
            out[-1] += " " + line.strip()
        else:
            in_item = False
    return out


def undocumented() -> list[str]:
    texts = doc_texts()
    spans = [s for t in texts.values() for s in SPAN.findall(FENCE.sub("", t))]
    yaml_keys: set[str] = set()
    for t in texts.values():
        for lang, code in FENCE.findall(t):
            if lang == "yaml":
                try:
                    yaml_keys |= _yaml_paths(yaml.safe_load(code))
                except yaml.YAMLError:
                    pass
    blocks = [b for t in texts.values() for b in _blocks(t)]
    listed = [(h, b, _listed_lines(b)) for h, b in blocks]

    missing = []
    for path in recipe_fields():
        if path in yaml_keys or any(_bounded(path).search(s) for s in spans):
            continue
        parts = path.split(".")
        ok = False
        for i in range(1, len(parts)):
            section, rel = ".".join(parts[:i]), ".".join(parts[i:])
            rel_re = _bounded(rel)
            for heading, body, lines in listed:
                if _names_section(heading, body, section) and any(
                        rel_re.match(s) for line in lines for s in SPAN.findall(line)):
                    ok = True
                    break
            if ok:
                break
        if not ok:
            missing.append(path)
    return missing


def test_walk_finds_nested_fields():
    fields = recipe_fields()
    assert {"name", "data.gopher.min_words", "data.near_dedup.verify", "train.parallel.timeout_s",
            "finetune.lora.r", "model.norm_eps"} <= set(fields)
    assert "data.gopher" not in fields  # sections are walked into, not listed


def test_every_recipe_field_is_documented():
    missing = undocumented()
    assert not missing, (
        f"{len(missing)} recipe fields are not documented in docs/*.md (full dotted path in backticks, or "
        f"the name in a table/list under a heading naming its section; see this file's docstring):\n  "
        + "\n  ".join(missing))
