"""The recipe plumbing every verb shares, written once: `--recipe`, `--set` and loading.

Stage command modules (fmforge.data.commands, ...) and fmforge.cli import from here.
"""
from __future__ import annotations

from typing import List, Optional, TypeVar

import typer
from pydantic import BaseModel, ValidationError

from fmforge.config import Recipe, RecipeError, load_recipe

S = TypeVar("S", bound=BaseModel)

RecipeOpt = typer.Option(None, "--recipe", "-r", help="recipe YAML file or built-in name (default: demo)")
SetOpt = typer.Option(None, "--set", "-s", help="override one recipe field, e.g. --set train.max_steps=50 (repeatable)")


def recipe_from(recipe: Optional[str], sets: Optional[List[str]]) -> Recipe:
    """The recipe a verb runs with: the file (or built-in name), then each --set in order."""
    return load_recipe(recipe, sets or [])


def with_options(section: S, options: dict[str, tuple[str, object]]) -> S:
    """`section` with a verb's own options applied ({field: (flag, value)}; None: not given),
    validated like the recipe: an impossible value is a RecipeError naming the flag."""
    upd = {k: v for k, (_, v) in options.items() if v is not None}
    try:
        return type(section).model_validate({**section.model_dump(), **upd})
    except ValidationError as e:
        parts = []
        for er in e.errors():
            name = str(er["loc"][0]) if er["loc"] else ""
            flag = options.get(name, (name,))[0]
            parts.append(f"{flag}: {er['msg']} (got {er.get('input')!r})")
        raise RecipeError("; ".join(parts)) from None
