"""On a GPU, queuing a step never waits for the GPU: a CPU batch is copied from pinned memory
(fmforge.train.step.to_device). From pageable memory the CUDA driver may first wait for the
stream to drain; the trainer's one-step run-ahead then overlapped nothing (docs/LOG.md,
session 11). Skipped without CUDA; the device session runs it before its benchmarks."""
import pytest
import torch

from fmforge.train.step import to_device

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_a_cpu_batch_on_the_cpu_is_the_batch_itself():
    x = torch.arange(12).view(3, 4)
    assert to_device(x, torch.device("cpu")) is x


@cuda
def test_copying_a_cpu_batch_does_not_wait_for_the_gpu():
    x = torch.randint(0, 32768, (32, 1024))  # a time-to-quality batch: 256 KiB of int64
    torch.cuda.synchronize()
    torch.cuda._sleep(1 << 31)  # about a second of GPU work, queued ahead of the copy
    g = to_device(x, torch.device("cuda"))
    still_busy = not torch.cuda.current_stream().query()  # the host got here before the GPU finished
    torch.cuda.synchronize()
    assert still_busy, "the copy waited for the stream to drain"
    assert torch.equal(g.cpu(), x)


def pageable_copy_waits() -> bool:
    """The failure the pinned copy avoids, on this machine's driver: whether the same copy from
    pageable memory returns only once the queued work is done. Printed by check(), not asserted:
    it is the driver's behaviour, not ours."""
    x = torch.randint(0, 32768, (32, 1024))
    torch.cuda.synchronize()
    torch.cuda._sleep(1 << 31)
    x.to("cuda", non_blocking=True)
    waited = torch.cuda.current_stream().query()
    torch.cuda.synchronize()
    return waited


def check() -> None:
    """The CUDA checks without pytest (the device image has none): python -c 'from
    tests.test_gpu_async import check; check()'."""
    print(f"a pageable copy waited for the GPU: {pageable_copy_waits()}")
    try:
        test_copying_a_cpu_batch_does_not_wait_for_the_gpu()
        print("to_device (pinned) did not wait: ok")
    except AssertionError as e:
        print(f"to_device: FAILED {e}")
