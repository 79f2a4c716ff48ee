"""The one `device` setting of every model stage: auto | cpu | cuda | cuda:N, resolved here.

`auto` is CUDA when torch sees a GPU, else the CPU. On CUDA, models run in bfloat16 where the
GPU supports it (`torch.cuda.is_bf16_supported()`), else in fp32; on the CPU everything stays
fp32, as before this setting existed. Cache identities record the dtype (it changes results)
but not the device name: fp32 on any device shares one cache. torch is imported only when the
answer depends on it (auto or cuda), so validating `device: cpu` stays cheap.
"""

from __future__ import annotations

import contextlib
import re
from typing import Annotated

from pydantic import AfterValidator

from fairl.config import ConfigError

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"
_DEVICE = re.compile(r"auto|cpu|cuda(:[0-9]{1,4})?")

# GPU batch defaults (sequences per forward) used when a stage runs on CUDA and its config
# leaves the batch size unset: sized for a 16 GB GPU with a <= 410M-parameter LM in bf16 and
# prompts + continuations under 128 tokens; larger GPUs can raise them in the config.
GPU_BATCH = {"generate": 256, "logprobs": 64, "encode": 256, "judge": 256}
CPU_BATCH = {"generate": 32, "logprobs": 16, "encode": 64, "judge": 32}


def check_syntax(value: str) -> str:
    """`value` if it is a device name this setting accepts, else ValueError (for validators)."""
    if not isinstance(value, str) or _DEVICE.fullmatch(value) is None:
        raise ValueError(f"expected {DEVICE_CHOICES}")
    return value


# A config field holding a device name: syntax checked at validation, availability (which may
# need torch) by resolve_device where the config is loaded.
DeviceName = Annotated[str, AfterValidator(check_syntax)]


def availability_problem(value: str) -> str | None:
    """Why `value` (already syntax-checked) cannot run here, or None."""
    if value in ("cpu", "auto"):
        return None
    import torch  # only for a CUDA request: the answer depends on the machine

    if not torch.cuda.is_available():
        return "CUDA is not available on this machine"
    index = int(value.partition(":")[2] or 0)
    if index >= torch.cuda.device_count():
        return f"no CUDA device {index}: this machine has {torch.cuda.device_count()}"
    return None


def resolve_device(value: str, where: str = "device") -> str:
    """'cpu' or 'cuda:N' for a setting; ConfigError naming `where` when it cannot run here."""
    try:
        check_syntax(value)
    except ValueError as error:
        raise ConfigError(f"{where}: {error} (got {value!r})") from None
    problem = availability_problem(value)
    if problem is not None:
        raise ConfigError(f"{where}: {problem} (got {value!r})")
    if value == "cpu":
        return "cpu"
    import torch

    if value == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    return f"cuda:{int(value.partition(':')[2] or 0)}"


def model_dtype(device: str):
    """torch dtype of model weights on `device` (resolved): bf16 on a CUDA GPU with it, else fp32."""
    import torch

    if device.startswith("cuda") and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def dtype_name(dtype) -> str:
    """'float32', 'bfloat16', ... of a torch dtype (the form cache identities record)."""
    return str(dtype).removeprefix("torch.")


def batch_size(stage: str, device: str, configured: int | None) -> int:
    """The configured batch size, else the stage's default for the device kind."""
    if configured is not None:
        return configured
    return (GPU_BATCH if device.startswith("cuda") else CPU_BATCH)[stage]


@contextlib.contextmanager
def numpy_blas_threads(threads: int):
    """numpy's (and scipy's) BLAS on `threads` threads for the block (a study's worker: as
    many as torch's, cores // workers, recorded as the trial's torch_threads tag).

    The fit's products are numpy's (fairl.irl.batch), and their rounding depends on the
    thread count, as MKL's did. When torch still ran them, OpenBLAS's threads (left spinning
    after each call) took the cores from torch on a 2-core machine, so numpy had one thread;
    now both libraries get the same count, and numpy's does the work.
    """
    from threadpoolctl import threadpool_limits  # a dependency of scikit-learn

    with threadpool_limits(threads, user_api="blas"):
        yield
