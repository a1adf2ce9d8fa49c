"""`fmforge serve` (mounted by fmforge.cli): the OpenAI-compatible server on uvicorn."""
from __future__ import annotations

import errno
import os
import socket
from pathlib import Path
from typing import List, Optional

import typer

from fmforge.errors import UserError
from fmforge.options import RecipeOpt, SetOpt, recipe_from, with_options


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve(model: Optional[Path] = typer.Option(None, "--model", help="run folder, model/checkpoint folder, or HF folder"),
              adapter: Optional[Path] = typer.Option(None, "--adapter", help="a LoRA adapter folder (fmforge finetune's "
                                                     "adapter/), folded into --model or the base it records"),
              host: Optional[str] = typer.Option(None, "--host", help="default serve.host (127.0.0.1)"),
              port: Optional[int] = typer.Option(None, "--port", help="default serve.port (8000)"),
              api_key: Optional[str] = typer.Option(None, "--api-key", envvar="FMFORGE_API_KEY",
                                                    help="require Authorization: Bearer KEY"),
              served_model_name: Optional[str] = typer.Option(None, "--served-model-name",
                                                              help="the model id clients use (default: folder name)"),
              recipe: Optional[str] = RecipeOpt, sets: Optional[List[str]] = SetOpt):
        """Serve a model over an OpenAI-compatible API (completions, chat, streaming) with a chat page at /.

        Examples: fmforge serve --model runs/demo --port 8000 --set serve.max_batch=64
                  fmforge serve --adapter runs/demo/finetune/adapter
        """
        try:
            import fastapi  # noqa: F401
            import uvicorn
        except ModuleNotFoundError as e:
            raise UserError(f"fmforge serve needs the [serve] extra ({e.name} is missing): "
                            "pip install 'fmforge[serve]'") from None
        from fmforge.serve.api import create_app
        from fmforge.serve.load import build_service

        if model is None and adapter is None:
            raise UserError("give --model DIR (a run, model or HF folder) or --adapter DIR (a LoRA adapter)")
        for flag, p in (("--model", model), ("--adapter", adapter)):
            if p is not None and not p.is_dir():
                raise UserError(f"{flag} {p}: no such folder")
        if adapter is not None and not (adapter / "adapter_config.json").is_file():
            raise UserError(f"--adapter {adapter}: no adapter_config.json (an adapter folder of `fmforge finetune`)")
        cfg = with_options(recipe_from(recipe, sets).serve, {"host": ("--host", host), "port": ("--port", port)})
        sock = listen(cfg.host, cfg.port)
        try:
            svc = build_service(model, cfg, api_key or None, served_model_name, adapter)
        except BaseException:
            sock.close()
            raise
        typer.echo(f"serving {svc.name} ({svc.sched.engine.cfg.n_layers} layers, {svc.max_len}-token context, "
                   f"{cfg.max_batch} slots) on http://{cfg.host}:{cfg.port}  (pid {os.getpid()})")
        try:
            server = uvicorn.Server(uvicorn.Config(create_app(svc), host=cfg.host, port=cfg.port, log_level="warning"))
            server.run(sockets=[sock])
        finally:
            svc.sched.close()


def listen(host: str, port: int) -> socket.socket:
    """The server's socket, bound before the model loads (minutes for a large one), so a port
    in use or a host that is not this machine's is refused at once, not after the load."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family)
    except OSError as e:
        why = os.strerror(e.errno) if (e.errno or 0) > 0 else "no such host"  # gaierror: a negative errno
        hint = "another server is using it: choose another --port" if e.errno == errno.EADDRINUSE else \
            "check --host (an address of this machine) and --port"
        raise UserError(f"--port {port}: cannot listen on {host}:{port} ({why}); {hint}") from None
