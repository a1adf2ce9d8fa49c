"""The recipe plumbing every verb shares, written once: `--recipe`, `--set` and loading.

Stage command modules (fmforge.data.commands, ...) and fmforge.cli import from here.
"""
from __future__ import annotations

from typing import List, Optional

import typer

from fmforge.config import Recipe, load_recipe

RecipeOpt = typer.Option(None, "--recipe", "-r", help="recipe YAML file or built-in name (default: demo)")
SetOpt = typer.Option(None, "--set", "-s", help="override one recipe field, e.g. --set train.max_steps=50 (repeatable)")


def recipe_from(recipe: Optional[str], sets: Optional[List[str]]) -> Recipe:
    """The recipe a verb runs with: the file (or built-in name), then each --set in order."""
    return load_recipe(recipe, sets or [])
