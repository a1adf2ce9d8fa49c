"""Everything about devices and parallelism, kept out of the model and the loop.

One process per device (torchrun sets RANK/WORLD_SIZE/LOCAL_RANK). The recipe's
`train.parallel.strategy` says how the ranks share the model:
  single  one process, no wrapper (the plain path);
  ddp     every rank holds the whole model, gradients are all-reduced once per step;
  fsdp    FSDP2: each transformer block, then the whole model, sharded (`fully_shard`), with
          a mixed-precision policy (bf16 parameters on the GPU, fp32 gradient reduction).
torch.compile wraps each block, which compiles once and is reused by every layer.
"""
from __future__ import annotations

import contextlib
import functools
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from fmforge.config import TrainConfig
from fmforge.errors import UserError


@dataclass
class Runtime:
    device: torch.device
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    autocast_dtype: torch.dtype | None = None
    compile: bool = False
    owns_group: bool = False  # setup() made the process group, so teardown() ends it
    strategy: str = "single"  # single | ddp | fsdp, set by choose_strategy

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def autocast(self):
        if self.autocast_dtype is None:
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)


def setup(cfg: TrainConfig) -> Runtime:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    want = cfg.device
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    if want.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"train.device is {cfg.device!r} but no CUDA device is visible: "
                            "set train.device=cpu or auto")
        device = torch.device(f"cuda:{local}" if world > 1 or want == "cuda" else want)
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        prefer_attention(cfg.attention, device)
    else:
        device = torch.device("cpu")
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
    # A group also at world size 1 when a strategy is forced (FSDP/DDP on one device, to
    # measure their overhead); without torchrun's rendezvous an in-process store serves.
    forced = cfg.parallel.strategy != "auto"
    owns = (world > 1 or forced) and not dist.is_initialized()
    if owns:
        backend = "nccl" if device.type == "cuda" else "gloo"
        timeout = timedelta(seconds=cfg.parallel.timeout_s)
        if "MASTER_ADDR" in os.environ:
            dist.init_process_group(backend, timeout=timeout)
        else:
            dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1, timeout=timeout)
    dtype = {"bfloat16": torch.bfloat16, "float32": None}.get(cfg.dtype)
    if cfg.dtype == "auto":
        dtype = torch.bfloat16 if device.type == "cuda" else None
    use_compile = cfg.compile == "on" or (cfg.compile == "auto" and device.type == "cuda")
    return Runtime(device, rank, world, local, dtype, use_compile, owns)


def prefer_attention(choice: str, device: torch.device) -> None:
    """Put one SDPA backend first in PyTorch's priority order; shapes it cannot serve
    still fall back to the next one."""
    from torch.nn.attention import SDPBackend

    if choice == "auto":
        choice = "cudnn" if torch.cuda.get_device_capability(device) == (9, 0) else "torch"
    if choice == "torch":
        return
    first = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION}[choice]
    order = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH, SDPBackend.CUDNN_ATTENTION]
    order = [first] + [b for b in order if b != first]
    torch._C._set_sdp_priority_order([int(b) for b in order])


def choose_strategy(cfg: TrainConfig, n_params: int, world: int) -> tuple[str, str]:
    """(strategy, why), for the log."""
    want, cut = cfg.parallel.strategy, cfg.parallel.fsdp_min_params
    if want != "auto":
        return want, f"train.parallel.strategy={want}"
    if world == 1:
        return "single", "one process"
    if n_params >= cut:
        return "fsdp", (f"{n_params / 1e6:,.0f}M params >= train.parallel.fsdp_min_params={cut / 1e6:,.0f}M: "
                        "shard weights, gradients and optimizer state")
    return "ddp", (f"{n_params / 1e6:,.1f}M params < train.parallel.fsdp_min_params={cut / 1e6:,.0f}M: "
                   "a replica fits, one all-reduce per step is cheapest")


def parallelize(model: torch.nn.Module, rt: Runtime, activation_checkpointing: bool = False,
                loss_chunk_tokens: int | None = None) -> torch.nn.Module:
    """Move to the device, then (optionally) checkpoint, chunk the loss head, compile, and wrap or
    shard by rt.strategy."""
    model.to(rt.device)
    if loss_chunk_tokens:
        # train.loss_chunk_tokens: the same head and loss, the logits held one chunk at a time.
        # Under FSDP2 the head's weight reaches it gathered (a plain tensor) as in loss_head.
        from fmforge.model.chunked_loss import chunked_loss_head

        model.loss_head = functools.partial(chunked_loss_head, chunk_tokens=loss_chunk_tokens)
    if activation_checkpointing:
        from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

        for i, block in enumerate(model.layers):
            model.layers[i] = checkpoint_wrapper(block, preserve_rng_state=False)
    if rt.compile:
        if rt.device.type == "cpu":
            # Inductor needs a C++ compiler on the CPU; without one, run eager rather than fail.
            from torch._dynamo import config as dynamo_config

            dynamo_config.suppress_errors = True
        # Each block on its own: they share one compiled graph, so compilation takes
        # seconds, not the minutes of a whole-model compile. The loss head apart, so that
        # the fp32 logits stay inside fused kernels (chunked, its loop is unrolled: one graph).
        # With model.value_embeds and unet_skips the blocks are of up to four kinds (a table or
        # not, a skip or not), each compiled apart for training, for no-grad eval and for other
        # lengths: past dynamo's default limit of 8 graphs, after which the rest ran eager.
        for knob in ("recompile_limit", "cache_size_limit"):
            if hasattr(torch._dynamo.config, knob):
                setattr(torch._dynamo.config, knob, max(getattr(torch._dynamo.config, knob), 32))
        for block in model.layers:
            block.compile()
        model.loss_head = torch.compile(model.loss_head)
    if rt.strategy == "fsdp":
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        # Reduce gradients in fp32 across ranks; on one rank there is nothing to sum, so the
        # bf16 gradient goes through as it is (cast to the fp32 shard after: the same numbers,
        # half the bytes through the reduce-scatter's buffers).
        param_dtype = rt.autocast_dtype or torch.float32
        mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32 if rt.world > 1 else param_dtype)
        # Free each block's gathered weights after its forward and gather again for the
        # backward (ZeRO-3); on one rank there is nothing to free, so keep them.
        reshard = rt.world > 1
        for block in model.layers:
            fully_shard(block, mp_policy=mp, reshard_after_forward=reshard)
        fully_shard(model, mp_policy=mp, reshard_after_forward=reshard)
    elif rt.strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(model, device_ids=[rt.device] if rt.device.type == "cuda" else None)
    return model


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The Transformer inside a DDP wrapper (FSDP2 shards in place: the model is itself)."""
    return getattr(model, "module", model)


def gradient_sync(model: torch.nn.Module, rt: Runtime, sync: bool):
    """A context for one micro-batch's backward: reduce gradients only when `sync` (the last
    micro-batch of a step), so a step with accumulation communicates once."""
    if rt.strategy == "ddp" and not sync:
        return model.no_sync()
    if rt.strategy == "fsdp":
        model.set_requires_gradient_sync(sync)
    return contextlib.nullcontext()


def full_state_dicts(model: torch.nn.Module, opt: torch.optim.Optimizer | None, rt: Runtime) -> tuple[dict, dict]:
    """Model (and optimizer) state as whole (unsharded) tensors, the same format on one
    device or many. With several ranks every rank must call this (it gathers)."""
    if rt.strategy == "single":
        return model.state_dict(), (opt.state_dict() if opt is not None else {})
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    if opt is None:
        return get_model_state_dict(model, options=options), {}
    return get_state_dict(model, opt, options=options)


def all_reduce_mean(x: torch.Tensor, rt: Runtime) -> torch.Tensor:
    if rt.world > 1:
        dist.all_reduce(x, op=dist.ReduceOp.AVG)
    return x


def teardown(rt: Runtime) -> None:
    """End the process group setup() made; one made by a caller (the pipeline's) is the caller's to end."""
    if rt.owns_group and dist.is_initialized():
        dist.destroy_process_group()
