"""The software a prediction assumes: the attention implementation, the framework stack, compute dtypes.

Vocabulary (the same backend names as measurement, `mbbench.models.attention`):
`eager`, `sdpa`, `flex`, `varlen`, `flash`, `xformers`, `auto`. A backend resolves to a *kernel*, what runs:

- `eager`: two batched GEMMs (QKᵀ, PV) and separate element-wise passes (scale, mask add, softmax) over
  materialised B×H×S×S scores in the model dtype (fp32 under fp32 weights); memory O(S²).
- `math`: PyTorch SDPA's fallback, the same materialised work (sdp_utils.cpp: reached when no fused kernel fits).
- `flash`: FlashAttention 2 (flash-attn, aten's FA2 behind `varlen_attn`): tensor cores, fp16/bf16 only, sm80+,
  no mask (packed with cu_seqlens), skips blocks outside a ±window; O(tokens) memory.
- `mem_efficient`: the cutlass fMHA of SDPA and xformers: takes masks, fp32 too (SIMT, no tensor cores),
  no block skipping (a local window only through a dense mask); O(tokens) memory.
- `flex`: Triton FlexAttention with a block mask: packed, block-sparse.
Source of every rule: backends-and-competitors.md A.4–A.7 and C.1 (sdp_utils.cpp read from torch main).
"""

from __future__ import annotations

from dataclasses import dataclass

from mbbench.dtypes import HALF, canonical_dtype
from mbbench.errors import UserError
from mbbench.hardware.gpus import GPU

BACKENDS = ("eager", "sdpa", "flex", "varlen", "flash", "xformers", "auto")
KERNELS = ("eager", "math", "flash", "mem_efficient", "flex")


def check_dtype(gpu: GPU, dtype: str) -> str:
    """The dtype, if `gpu` computes it on tensor cores or SIMT; UserError otherwise.

    Decision (issue 16): a dtype the GPU lacks is refused, never silently replaced. The T4 (sm75) has no bf16
    tensor cores (gpu-basket.csv: bf16 NA), so bf16 there is an error that says to ask for float16.
    """
    dtype = canonical_dtype(dtype)
    if dtype == "bfloat16" and gpu.bf16_tflops is None:
        raise UserError(f"{gpu.name} (sm{gpu.compute_capability[0]}{gpu.compute_capability[1]}) has no bf16 tensor "
                        "cores; predict with --dtype float16 (what the model would run there)")
    return dtype


@dataclass(frozen=True)
class Stack:
    """The framework that produced (or will produce) a number: it sets which work is fused and how GEMMs run.

    `tf32`: fp32 GEMMs run on tensor cores at the TF32 rate (torch.backends.cuda.matmul.allow_tf32); off by
    default in PyTorch since 1.12 and off in the paper's runs (inductor warned it was not enabled).
    """

    name: str  # "pytorch", "tensorrt"
    tf32: bool = False
    fused_elementwise: bool = False  # norms/activations fused into GEMM epilogues (TensorRT plugins)
    description: str = ""


PYTORCH = Stack("pytorch", description="PyTorch modules (transformers, FlexBERT, mbbench): cuBLAS GEMMs, "
                                       "element-wise ops as separate kernels")
PYTORCH_TF32 = Stack("pytorch", tf32=True, description="PyTorch with TF32 fp32 matmuls enabled")
TENSORRT = Stack("tensorrt", fused_elementwise=True,
                 description="TensorRT engine (NVIDIA demo/BERT, MLPerf harness): fused plugins, fixed shapes")


def stack_of_framework(framework: str) -> Stack:
    """The Stack for calibration.csv's `framework` text (TensorRT rows, MLPerf's TensorRT harness, PyTorch)."""
    text = framework.lower()
    if "tensorrt" in text:
        return TENSORRT
    if "pytorch" in text or "transformers" in text:
        return PYTORCH
    raise UserError(f"unknown software stack {framework!r}")


@dataclass(frozen=True)
class AttentionImpl:
    """What runs for attention: the backend asked for and the kernel it resolves to on a GPU and dtype."""

    backend: str  # one of BACKENDS except "auto"
    kernel: str  # one of KERNELS
    packed: bool  # documents packed without padding (cu_seqlens / block-diagonal); False: padded rows
    compute_dtype: str  # dtype of QKᵀ and PV (bf16 where FlexBERT casts under fp32 weights)
    mask: bool = False  # a dense (B, 1, S, S) boolean mask is materialised (one byte per query-key pair)
    block_sparse: bool = False  # local (windowed) layers compute only the ±window (flash window_size, flex)
    rotary: str = "fused"  # how RoPE runs (ROTARY_CODES): one Triton kernel (FlexBERT, the paper's environment), or
    #                        separate torch ops as transformers writes them or as mbbench's reference does
    reason: str = ""
    sm90_native: bool = False  # a kernel written for Hopper's warpgroup MMA (cuDNN attention, TensorRT's sm90 fMHA);
    #                            False: sm80 code (FlashAttention 2, cutlass fMHA), slower there (perfmodel)

    @property
    def materialises_scores(self) -> bool:
        return self.kernel in ("eager", "math")

    @property
    def tensor_cores(self) -> bool:
        return self.compute_dtype in HALF


def sdpa_kernel(dtype: str, gpu: GPU, mask: bool, head_dim: int,
                mem_efficient_enabled: bool = True) -> tuple[str, str, bool]:
    """The kernel PyTorch's CUDA SDPA dispatcher picks, why, and whether it is Hopper-native (sdp_utils.cpp;
    backends-and-competitors.md A.5).

    flash: fp16/bf16, sm80+, head_dim % 8 == 0 and ≤ 256, and no attn_mask. mem-efficient: fp32/fp16 anywhere
    from sm50, bf16 from sm80, masks allowed, head_dim % 4 (fp32) or % 8. cuDNN (fp16/bf16, sm90 first) is costed
    as flash, Hopper-native. Otherwise the math fallback.
    """
    sm = gpu.compute_capability
    if dtype in HALF and not mask and sm >= (8, 0) and head_dim % 8 == 0 and head_dim <= 256:
        return "flash", "SDPA flash: half precision, no mask, sm80+", False
    if dtype in HALF and mask and sm >= (9, 0) and head_dim % 8 == 0 and head_dim <= 128:
        return "flash", "SDPA cuDNN attention (preferred on sm90, takes masks), costed as flash", True
    aligned = head_dim % (4 if dtype == "float32" else 8) == 0
    if mem_efficient_enabled and aligned and (dtype != "bfloat16" or sm >= (8, 0)):
        why = "an attention mask rules out flash" if mask else "fp32 rules out flash"
        return "mem_efficient", f"SDPA memory-efficient (cutlass): {why}", False
    return "math", "SDPA math fallback: no fused kernel accepts this dtype/mask/alignment", False


@dataclass(frozen=True)
class DefaultAttention:
    """Which attention a model family runs when none is asked for, in the paper's environment and in transformers 5."""

    paper: str  # backend in the paper's environment: transformers 4.44.1, torch 2.4.0, flash-attn 2.6.3, fp32 weights
    transformers5: str  # backend transformers 5.x picks by default (sdpa where `_supports_sdpa`)
    note: str


DEFAULT_ATTENTION: dict[str, DefaultAttention] = {
    "BERT": DefaultAttention("sdpa", "sdpa", "BertSdpaSelfAttention is the default from transformers 4.41; "
                                             "padded rows with an additive mask"),
    "RoBERTa": DefaultAttention("eager", "sdpa", "RoBERTa had no SDPA class in 4.44 (issue 16: eager in the paper's "
                                                 "environment, materialised fp32 scores); sdpa in 5.x"),
    "DeBERTaV3": DefaultAttention("eager", "eager", "DebertaV2 is eager only, also in 5.24 (no _supports_sdpa): "
                                                    "disentangled c2p/p2c scores with gathers"),
    "NomicBERT": DefaultAttention("sdpa", "sdpa", "nomic-bert-2048 remote code runs padded F.scaled_dot_product_"
                                                  "attention; native NomicBertModel (5.5+) defaults to sdpa"),
    "GTE-en-MLM": DefaultAttention(
        "xformers", "sdpa",
        "paper rows: the fixed-length rows and max batches of 'GTE-en-MLM' and 'GTE-en-MLM xformers' agree and "
        "its 8192-token batch 38 cannot hold materialised fp32 scores (3.2 GB per sequence and layer), so the "
        "measured runs used the memory-efficient kernel, padded, in fp32 (SIMT, no tensor cores); its variable "
        "rows were derived from the fixed time (Table 11 has no runtime). Native GteModel (5.18+): sdpa"),
    "ModernBERT": DefaultAttention("varlen", "sdpa", "paper: FlexBERT with flash-attn 2 varlen, ±64 window, qkv "
                                                     "cast to bf16 under fp32 weights; transformers 4.48–5.0 "
                                                     "unpadded FA2 when flash-attn is installed, 5.1+ the generic "
                                                     "interface with dense masks (sdpa)"),
    "Ettin": DefaultAttention("varlen", "sdpa", "ModernBERT architecture (same as ModernBERT)"),
    "mmBERT": DefaultAttention("varlen", "sdpa", "ModernBERT architecture (same as ModernBERT)"),
    "EuroBERT": DefaultAttention("sdpa", "sdpa", "native EuroBertModel (5.3+) supports sdpa/flash/flex, sdpa default"),
    "NeoBERT": DefaultAttention("xformers", "xformers", "NeoBERT's code: xformers memory_efficient_attention "
                                                        "with an additive padding mask, else SDPA"),
}
ENVIRONMENTS = ("paper", "transformers5")


def default_backend(family: str, environment: str = "paper") -> str:
    """The backend `family` runs by default in `environment` ('paper' or 'transformers5'); UserError if unknown."""
    if environment not in ENVIRONMENTS:
        raise UserError(f"unknown environment {environment!r}; choose from {', '.join(ENVIRONMENTS)}")
    if family not in DEFAULT_ATTENTION:
        raise UserError(f"no default attention known for family {family!r}")
    return getattr(DEFAULT_ATTENTION[family], environment)


def auto_backend(gpu: GPU, packed_model: bool) -> str:
    """The backend mbbench's `auto` runs on `gpu` without optional extras: the one rule every prediction uses.

    Packed models: FA2 varlen on sm80+ (torch's `varlen_attn`), FlexAttention with a block mask below (the T4);
    padded models: SDPA. It mirrors the measurement's CUDA order (`models.attention.AUTO_ORDER`: flash > varlen >
    flex > windowed > sdpa) with flash-attn and xformers not installed; a test holds the two in agreement.
    """
    if not packed_model:
        return "sdpa"
    return "varlen" if gpu.compute_capability >= (8, 0) else "flex"


# How RoPE is applied, by the code that runs it (perfmodel.elementwise_bytes costs each):
# fused: one kernel reads and writes q and k (FlexBERT's flash-attn Triton rotary);
# transformers: x.float() (twice), rotate_half (neg + cat), ×cos, ×sin, the sum and the downcast, each a pass;
# mbbench: elementwise.apply_rotary — four products reading x in its dtype, two sums written in x's dtype.
ROTARY_CODES = ("fused", "transformers", "mbbench")


def resolve_attention(backend: str, dtype: str, gpu: GPU, *, family: str = "ModernBERT", packed_model: bool = True,
                      head_dim: int = 64, environment: str = "paper", rotary: str = "transformers") -> AttentionImpl:
    """The attention that runs for `backend` with a model in `dtype` on `gpu`.

    `packed_model`: the model packs documents (mbbench reference models, transformers models on packed tokens);
    padded transformers models run padded rows whatever the kernel. `auto` takes the family's default in
    `environment` (DEFAULT_ATTENTION). Raises UserError for an unknown backend or one that cannot run
    (flash/varlen need sm80+; the T4 has no bf16). `rotary`: the model code's RoPE (ROTARY_CODES: "transformers"
    or "mbbench"); in the paper's environment FlexBERT's flash/flex path fuses it whatever is given.
    """
    if rotary not in ROTARY_CODES:
        raise UserError(f"unknown rotary code {rotary!r}; choose from {', '.join(ROTARY_CODES)}")
    dtype = check_dtype(gpu, dtype)
    if backend == "windowed":
        raise UserError("the performance model has no cost model for the windowed backend (mbbench's CPU path: "
                        "64-query SDPA tiles for local layers, padded SDPA for global ones); predict varlen, flash or "
                        "flex (what `auto` picks on GPUs) or sdpa")
    if backend not in BACKENDS:
        raise UserError(f"unknown attention backend {backend!r}; choose from {', '.join(BACKENDS)}")
    sm = gpu.compute_capability
    # Only FlexBERT (the paper's environment, packed kernels) fuses RoPE into one Triton kernel.
    packed_rotary = "fused" if environment == "paper" else rotary
    if backend == "auto":
        backend = default_backend(family, environment)
        if backend in ("flash", "varlen") and sm < (8, 0):  # auto never picks what cannot run on this GPU
            backend = "flex" if packed_model else "sdpa"
    if backend == "eager":
        return AttentionImpl("eager", "eager", False, dtype, mask=True, rotary=rotary,
                             reason="eager: QKᵀ, mask, softmax, PV as separate ops on materialised scores")
    if backend == "sdpa":
        kernel, why, native = sdpa_kernel(dtype, gpu, True, head_dim)
        return AttentionImpl("sdpa", kernel, False, dtype, mask=True, rotary=rotary, reason=why, sm90_native=native)
    if backend in ("flash", "varlen"):
        if sm < (8, 0):
            raise UserError(f"{backend} attention (FlashAttention 2) needs sm80+; {gpu.name} is sm{sm[0]}{sm[1]}")
        cast = dtype if dtype in HALF else ("bfloat16" if gpu.bf16_tflops is not None else "float16")
        why = "FA2 varlen on packed tokens" + ("" if cast == dtype else f"; q/k/v cast to {cast} inside attention "
                                                                      f"under {dtype} weights (FlexBERT)")
        return AttentionImpl(backend, "flash", True, cast, block_sparse=True, rotary=packed_rotary, reason=why)
    if backend == "flex":
        return AttentionImpl("flex", "flex", True, dtype, block_sparse=True, rotary=packed_rotary,
                             reason="FlexAttention with a document/window block mask")
    # xformers: cutlass fMHA; block-diagonal over packed tokens, or an additive mask over padded rows
    if dtype == "bfloat16" and sm < (8, 0):
        raise UserError("xformers memory-efficient attention needs sm80+ for bf16")
    return AttentionImpl("xformers", "mem_efficient", packed_model, dtype, mask=False, rotary=rotary,
                         reason="xformers memory_efficient_attention (cutlass)"
                                + (" on packed tokens" if packed_model else " with a broadcast (B, 1, 1, S) bias"))
