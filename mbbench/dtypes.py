"""dtype names as users type them <-> torch dtypes."""

from __future__ import annotations

import torch

from mbbench.errors import UserError

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


def parse_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise UserError(f"unknown dtype {name!r}; choose from float32, bfloat16, float16")
    return DTYPES[name]


def dtype_name(dtype: torch.dtype | str) -> str:
    return (parse_dtype(dtype) if isinstance(dtype, str) else dtype).__repr__().removeprefix("torch.")


def bytes_per_element(dtype: torch.dtype | str) -> int:
    return (parse_dtype(dtype) if isinstance(dtype, str) else dtype).itemsize
