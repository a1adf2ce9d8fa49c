"""`fmforge export` and `fmforge import-hf` (mounted by fmforge.cli)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from fmforge.errors import UserError
from fmforge.outputs import claimed, need


def register(app: typer.Typer) -> None:
    @app.command("export")
    def export(target: Optional[str] = typer.Argument(None, metavar="[FORMAT]", help="hf or gguf (same as --format)"),
               model: Path = typer.Option(..., "--model", help="run folder (its final model) or model/checkpoint folder"),
               fmt: Optional[str] = typer.Option(None, "--format", help="hf (a folder) or gguf (one file); default hf"),
               out: Path = typer.Option(..., "--out", "-o", help="a folder for hf, a FILE.gguf for gguf"),
               tokenizer: Optional[Path] = typer.Option(None, "--tokenizer", help="tokenizer.json (default: the run's)"),
               dtype: Optional[str] = typer.Option(None, "--dtype", help="gguf weights: f32, f16 (default), bf16, q8_0")):
        """Export a model for transformers (hf: config.json, safetensors, tokenizer, chat template,
        model card) or llama.cpp (gguf: one file with weights, tokenizer and chat template).

        Examples: fmforge export --model runs/demo --format hf --out exports/demo-hf
                  fmforge export gguf --model runs/demo --out exports/demo.gguf --dtype q8_0
        """
        if target and fmt and target != fmt:
            raise UserError(f"export {target} --format {fmt}: two different formats; give one")
        fmt = target or fmt or "hf"
        if fmt not in ("hf", "gguf"):
            raise UserError(f"--format {fmt!r}: choose hf or gguf")
        need(model, "--model")
        if fmt == "gguf":
            return _export_gguf(model, out, tokenizer, dtype or "f16")
        if dtype is not None:
            raise UserError("--dtype applies to --format gguf only (hf export writes the model's fp32 weights)")
        from fmforge.export.writer import export_hf
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
                tmp = od.path / ".tokenizer.json.tmp"  # by rename: never a half-written tokenizer.json
                tok.save(str(tmp))
                os.replace(tmp, od.path / "tokenizer.json")
                files.append("tokenizer.json")
            od.record(files)
        typer.echo(f"wrote {out}")


def _export_gguf(model: Path, out: Path, tokenizer: Optional[Path], dtype: str) -> None:
    from fmforge.export.gguf_file import check_out, write_gguf
    from fmforge.export.hf import refuse_unexportable
    from fmforge.export.writer import find_tokenizer, model_dir
    from fmforge.model.weights import read_config
    mdir = model_dir(model)
    refuse_unexportable(read_config(mdir / "model.json"), "GGUF (llama.cpp)")  # before asking for a tokenizer
    tok = Path(tokenizer) if tokenizer else find_tokenizer(mdir)
    if tok is None or not tok.is_file():
        raise UserError(f"no tokenizer.json beside {mdir} (or in ../tokenizer); pass --tokenizer FILE")
    check_out(out, [model, mdir, tok])
    info = write_gguf(mdir, tok, out, dtype)
    kinds = ", ".join(f"{n} {k}" for k, n in info["tensor_types"].items())
    typer.echo(f"wrote {out} ({info['bytes'] / 2**20:.1f} MiB; llama.cpp arch {info['arch']}, "
               f"pre-tokenizer {info['pre']}; tensors: {kinds})")
