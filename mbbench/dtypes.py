"""The one dtype vocabulary: names as users type them -> canonical names -> torch dtypes and widths.

Canonical names are torch's (`float32`, `bfloat16`, `float16`); `fp32`, `bf16` and `fp16` are accepted
spellings. `tfloat32` is not a weight dtype but a GEMM compute dtype (fp32 inputs on TF32 tensor cores):
the performance model knows its width; nothing parses it from a user.
"""

from __future__ import annotations

import torch

from mbbench.errors import UserError

# accepted spelling -> canonical name
ALIASES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
           "float16": "float16", "fp16": "float16"}
# how engines name the precision they compute in (OpenVINO's ov.Type: "f32", "bf16", "f16") -> canonical name
ENGINE_SPELLINGS = {**ALIASES, "f32": "float32", "f16": "float16"}
TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
HALF = ("float16", "bfloat16")
# bytes per element of every dtype a tensor or GEMM computes in (tfloat32 stores fp32)
WIDTHS = {"float32": 4, "tfloat32": 4, "bfloat16": 2, "float16": 2}


def canonical_dtype(name: str) -> str:
    """'bf16' -> 'bfloat16', 'fp32' -> 'float32', ...; UserError for anything else."""
    if name not in ALIASES:
        raise UserError(f"unknown dtype {name!r}; choose from float32, bfloat16, float16")
    return ALIASES[name]


def parse_dtype(name: str) -> torch.dtype:
    """A dtype name (any accepted spelling) -> the torch dtype; UserError for anything else."""
    return TORCH_DTYPES[canonical_dtype(name)]


def dtype_name(dtype: torch.dtype | str) -> str:
    """The canonical name of a torch dtype or of any accepted spelling."""
    return canonical_dtype(dtype) if isinstance(dtype, str) else str(dtype).removeprefix("torch.")


def computed_precision(name: str) -> str:
    """The canonical name of the precision an engine reports computing in ("f32" -> "float32"); a name no dtype
    has (ONNX Runtime's "mixed") is returned as it is."""
    return ENGINE_SPELLINGS.get(name.lower(), name)


def bytes_per_element(dtype: torch.dtype | str) -> int:
    """Bytes per element: a torch dtype, a weight dtype name, or a GEMM compute dtype ('tfloat32')."""
    if isinstance(dtype, torch.dtype):
        return dtype.itemsize
    return WIDTHS[dtype] if dtype in WIDTHS else WIDTHS[canonical_dtype(dtype)]
