"""Device, dtype and threads: set up once, the same way for generation and for training.

`Runtime.create("auto", "auto", threads)` picks a CUDA GPU when there is one (else the CPU), bfloat16
on a GPU that supports it and float32 on the CPU (on a 2-core CPU without AMX a bfloat16 step took
1.5-1.7x as long), and sets torch's CPU threads. Imports torch only when called.
"""

from __future__ import annotations

from dataclasses import dataclass

from thinkdraw.errors import ThinkdrawError

DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass(frozen=True)
class Runtime:
    device: str  # "cpu", "cuda", "cuda:1"
    dtype: str  # "float32", "bfloat16", "float16"

    @classmethod
    def create(cls, device: str = "auto", dtype: str = "auto", threads: int = 0) -> Runtime:
        """threads: torch's CPU threads (0 = torch's default)."""
        import torch

        if device.split(":")[0] not in DEVICES or (device == "auto" and ":" in device):
            raise ThinkdrawError(f"--device {device!r}: choose auto, cpu, cuda or cuda:N")
        if dtype not in DTYPES:
            raise ThinkdrawError(f"--dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ThinkdrawError(f"--device {device}: no CUDA GPU here")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if dtype == "auto":
            gpu_bf16 = device.startswith("cuda") and torch.cuda.is_bf16_supported()
            dtype = "bfloat16" if gpu_bf16 else "float32"
        if threads > 0:
            torch.set_num_threads(threads)
        return cls(device, dtype)

    @property
    def torch_dtype(self):
        import torch

        return getattr(torch, self.dtype)
