"""`fmforge export` and `fmforge import-hf` (mounted by fmforge.cli)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from fmforge.errors import UserError
from fmforge.outputs import claimed, need


def register(app: typer.Typer) -> None:
    @app.command("export")
    def export(model: Path = typer.Option(..., "--model", help="run folder (its final model) or model/checkpoint folder"),
               fmt: str = typer.Option("hf", "--format", help="hf"),
               out: Path = typer.Option(..., "--out", "-o"),
               tokenizer: Optional[Path] = typer.Option(None, "--tokenizer", help="tokenizer.json (default: the run's)")):
        """Export a model for transformers (config.json, safetensors, tokenizer, chat template, model card).

        Example: fmforge export --model runs/demo --format hf --out runs/demo/hf
        """
        from fmforge.export.writer import export_hf
        if fmt != "hf":
            raise UserError(f"--format {fmt!r}: only 'hf' is supported in this version")
        need(model, "--model")
        with claimed(out, "export", [model]) as od:
            od.path.mkdir(parents=True, exist_ok=True)
            files = export_hf(model, od.path, tokenizer)
            od.record(files)
        typer.echo(f"wrote {out} ({len(files)} files)")

    @app.command("import-hf")
    def import_hf(src: Path = typer.Argument(..., help="Hugging Face Llama/Qwen3/Mistral folder"),
                  out: Path = typer.Option(..., "--out", "-o")):
        """Convert an HF Llama-family checkpoint to fmforge's model.safetensors + model.json (+ tokenizer.json).

        Example: fmforge import-hf ./my-llama --out runs/imported/train
        """
        from fmforge.export.hf import load_hf_as_fmforge
        from fmforge.model.weights import save_model
        need(src, "HF folder")
        model, tok = load_hf_as_fmforge(src)
        with claimed(out, "import-hf", [src]) as od:
            od.path.mkdir(parents=True, exist_ok=True)
            save_model(model.state_dict(), model.cfg, od.path)
            files = ["model.safetensors", "model.json"]
            if tok is not None:
                tok.save(str(od.path / "tokenizer.json"))
                files.append("tokenizer.json")
            od.record(files)
        typer.echo(f"wrote {out}")
