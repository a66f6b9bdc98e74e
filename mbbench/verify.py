"""`mbbench verify`: prove the reference ModernBERT is the same function as transformers' ModernBertModel.

Builds our model with seeded weights, copies them into transformers' `ModernBertModel` (sdpa, fp32),
runs a mixed-length batch (documents longer than the 129-key window, unequal lengths) through every
backend available on the device, in both layouts, and compares real tokens against
(a) our eager fp32 packed output and (b) transformers' fp32 output.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mbbench.batching import pack_documents, pad_documents
from mbbench.errors import BackendUnavailable, UserError
from mbbench.device import parse_device
from mbbench.models.attention import BACKEND_CLASSES, get_backend
from mbbench.models.config import ModernBertConfig
from mbbench.models.gemm import ONEDNN_PACKED
from mbbench.models.gemm import TORCH as DEFAULT_GEMM
from mbbench.models.gemm import onednn_available, pack
from mbbench.models.elementwise import EAGER as DEFAULT_ELEMENTWISE
from mbbench.models.elementwise import KERNELS as ELEMENTWISE_KERNELS
from mbbench.models.elementwise import inductor_refusal
from mbbench.models.elementwise import use as use_elementwise
from mbbench.models.modernbert import build

# Documents longer than 129 tokens (so the window matters), of unequal lengths, one short one.
DEFAULT_LENGTHS = (300, 257, 190, 131, 64)
TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 2e-2, torch.float16: 1e-2}
# In half precision the error against fp32 grows with depth: transformers' own bf16 base model is 2.2e-2 off
# its fp32 output on DEFAULT_LENGTHS. A half-precision check passes within TOLERANCE or within this multiple of
# the error transformers makes in the same dtype on the same device, whichever is larger.
HALF_PRECISION_SLACK = 1.5


@dataclass
class Check:
    backend: str
    dtype: str
    layout: str
    against: str
    max_abs_error: float
    max_rel_error: float  # max |diff| / max |reference|: elementwise ratios blow up near zero
    tolerance: float
    reason: str = ""  # set when the check could not run (e.g. a requested backend unavailable here): a failure
    is_bar: bool = False  # transformers' own half-precision error: it sets the tolerance, it is not a check
    gemm: str = DEFAULT_GEMM  # the GEMM kernel the linears ran on (models.gemm.KERNELS)
    elementwise: str = DEFAULT_ELEMENTWISE  # RoPE's and the gated activation's kernel (models.elementwise.KERNELS)

    @property
    def judged_on(self) -> str:
        """Which error decides: absolute in fp32, relative (to the reference's max) in half precision."""
        return "abs" if self.dtype == "float32" else "rel"

    @property
    def passed(self) -> bool:
        if self.reason:
            return False
        return self.max_rel_error <= self.tolerance if self.dtype != "float32" else self.max_abs_error <= self.tolerance


def to_hf_config(cfg: ModernBertConfig):
    from transformers import ModernBertConfig as HFConfig

    return HFConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
        max_position_embeddings=cfg.max_position_embeddings, local_attention=cfg.local_window,
        global_attn_every_n_layers=cfg.global_every, global_rope_theta=cfg.global_rope_theta,
        local_rope_theta=cfg.local_rope_theta, norm_eps=cfg.norm_eps, pad_token_id=cfg.pad_token_id,
        bos_token_id=None, eos_token_id=None, cls_token_id=None, sep_token_id=None,
        attn_implementation="sdpa",
    )


def transformers_twin(model: torch.nn.Module):
    """transformers' ModernBertModel holding exactly our weights."""
    from transformers import ModernBertModel

    hf = ModernBertModel(to_hf_config(model.config)).eval()
    missing, unexpected = hf.load_state_dict(model.state_dict(), strict=False)
    if missing or unexpected:
        raise RuntimeError(f"weight names differ from transformers: missing {missing}, unexpected {unexpected}")
    return hf


def _transformers_in(model: torch.nn.Module, dtype: torch.dtype, device: torch.device, padded) -> torch.Tensor:
    """transformers' twin of `model` run in `dtype` on `device` over the padded batch: (batch, seq, hidden)."""
    twin = transformers_twin(model).to(device=device, dtype=dtype)
    with torch.inference_mode():
        return twin(input_ids=padded.input_ids.to(device),
                    attention_mask=padded.attention_mask.to(device)).last_hidden_state


def _errors(out: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    diff = (out.float() - ref.float()).abs().max().item()
    return diff, diff / max(ref.float().abs().max().item(), 1e-12)


def make_documents(cfg: ModernBertConfig, lengths=DEFAULT_LENGTHS, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    low = min(5, cfg.vocab_size - 1)
    return [torch.randint(low, cfg.vocab_size, (n,), generator=generator) for n in lengths]


def unavailable(name: str, dtype: torch.dtype, reason: str) -> Check:
    """A failing check for a backend that was asked for but cannot run (errors are NaN: nothing ran)."""
    nan = float("nan")
    return Check(name, str(dtype).removeprefix("torch."), "-", "-", nan, nan, TOLERANCE[dtype], reason)


def _runnable(names: list[str], requested: bool, device: torch.device, dtype: torch.dtype
              ) -> tuple[list[str], list[Check]]:
    """(backends that run here, failing checks for requested ones that cannot); unrequested ones are skipped."""
    runnable, failed = [], []
    for name in names:
        try:
            get_backend(name, device, dtype, needs_window=True)
        except BackendUnavailable as error:
            if requested:
                failed.append(unavailable(name, dtype, str(error)))
            continue
        except UserError:
            raise  # an unknown backend name is a bad input, not a failed check
        except Exception as error:  # noqa: BLE001 - a backend that breaks while probing cannot run here
            if requested:
                failed.append(unavailable(name, dtype, f"{type(error).__name__}: {error}"))
            continue
        runnable.append(name)
    return runnable, failed


def verify(cfg: ModernBertConfig, device: str = "cpu", dtypes: tuple[torch.dtype, ...] = (torch.float32,),
           backends: list[str] | None = None, lengths=DEFAULT_LENGTHS, seed: int = 0) -> list[Check]:
    """Compare every backend x dtype x layout against eager fp32 packed and transformers fp32 padded.

    Half-precision checks pass within TOLERANCE or HALF_PRECISION_SLACK x the error transformers' own model makes
    in that dtype (its row is in the result), whichever is larger.

    `backends=None` checks every backend that can run on `device` (others are skipped); a backend named in
    `backends` that cannot run is returned as a failing Check whose `reason` says why.
    Raises UserError for a bad device string or an unknown backend name.
    """
    device_obj = parse_device(device)
    unknown = [name for name in backends or [] if name not in BACKEND_CLASSES]
    if unknown:  # before the models are built and the kernels measured: a bad name is refused at once
        raise UserError(f"unknown attention backend {unknown[0]!r}; choose from {', '.join(BACKEND_CLASSES)}")
    docs = make_documents(cfg, lengths, seed)
    packed, padded = pack_documents(docs), pad_documents(docs, cfg.pad_token_id)
    real = padded.attention_mask.bool()

    model = build(cfg, backend="eager", seed=seed)
    with torch.inference_mode():
        reference = model(packed.input_ids, cu_seqlens=packed.cu_seqlens, max_seqlen=packed.max_seqlen)
        hf_out = transformers_twin(model)(input_ids=padded.input_ids,
                                          attention_mask=padded.attention_mask).last_hidden_state[real]

    checks = [Check("transformers-sdpa", "float32", "padded", "eager-fp32", *_errors(hf_out, reference), 1e-4)]
    for dtype in dtypes:
        names, failed = _runnable(backends or list(BACKEND_CLASSES), backends is not None, device_obj, dtype)
        checks.extend(failed)
        tol = TOLERANCE[dtype]
        if dtype != torch.float32:  # the bar: transformers' own error in this dtype (see HALF_PRECISION_SLACK)
            own = _transformers_in(model, dtype, device_obj, padded)[real.to(device_obj)].cpu()
            own_error = _errors(own, reference)
            tol = max(tol, HALF_PRECISION_SLACK * own_error[1])
            checks.append(Check("transformers-sdpa", str(dtype).removeprefix("torch."), "padded", "eager-fp32",
                                *own_error, tol, is_bar=True))
        for name in names:
            run = build(cfg, backend=name, seed=seed, device=device_obj, dtype=dtype)
            for kernel, elementwise in [(k, e) for k in gemm_kernels(device_obj, dtype)
                                        for e in elementwise_kernels(device_obj)]:
                pack(run, kernel)  # the linears on each kernel a CPU run may choose (models.gemm)
                use_elementwise(run, elementwise)  # and RoPE and GeGLU on each (models.fused)
                with torch.inference_mode():
                    outputs = {
                        "packed": run(packed.input_ids.to(device_obj), cu_seqlens=packed.cu_seqlens.to(device_obj),
                                      max_seqlen=packed.max_seqlen),
                        "padded": run(padded.input_ids.to(device_obj),
                                      padded.attention_mask.to(device_obj))[real.to(device_obj)],
                    }
                for layout, out in outputs.items():
                    out = out.cpu()
                    dname = str(dtype).removeprefix("torch.")
                    checks.append(Check(name, dname, layout, "eager-fp32", *_errors(out, reference), tol,
                                        gemm=kernel, elementwise=elementwise))
                    checks.append(Check(name, dname, layout, "transformers-fp32", *_errors(out, hf_out), tol,
                                        gemm=kernel, elementwise=elementwise))
    return checks


def elementwise_kernels(device: torch.device) -> list[str]:
    """The element-wise kernels a run may build our models with on `device`: Inductor's too on CPUs where it
    can compile (a run falls back to eager, and says why, where it cannot)."""
    if device.type == "cpu" and inductor_refusal() is None:
        return list(ELEMENTWISE_KERNELS)
    return [DEFAULT_ELEMENTWISE]


def gemm_kernels(device: torch.device, dtype: torch.dtype) -> list[str]:
    """The GEMM kernels a run may build our models with on `device` in `dtype`: oneDNN-packed too on CPUs that
    run it."""
    return [DEFAULT_GEMM, ONEDNN_PACKED] if device.type == "cpu" and onednn_available(dtype) else [DEFAULT_GEMM]
