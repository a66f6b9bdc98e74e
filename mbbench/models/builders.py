"""One builder per kind of model: its config, module, encoder, backends, weight loading and shape.

A catalogue row (`registry.ModelSpec`) is data; its `kind` names the builder that knows how to turn it
into something that runs. Nothing outside `mbbench/models/` dispatches on the kind.

Kinds:
- `reference`: our ModernBERT (ModernBERT, Ettin, mmBERT rows), packed end to end;
- `neobert`: our NeoBERT (no transformers class exists), packed;
- `hf`: a transformers model as shipped, on padded batches;
- `hf-packed`: a transformers model on packed tokens with attention routed through mbbench's backends.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, replace
from typing import Sequence

import torch
import torch.nn as nn

from mbbench.errors import BackendUnavailable, UserError
from mbbench.hardware.shape import Shape
from mbbench.models import weights
from mbbench.models.attention import BackendChoice, backend_names, choose_backend, get_backend
from mbbench.models.encoders import Encoder, HFPackedEncoder, HFPaddedEncoder, PackedEncoder, packed_hf_model
from mbbench.models.gemm import TORCH as DEFAULT_GEMM
from mbbench.models.gemm import onednn_available, pack
from mbbench.models.modernbert import ModernBert, init_weights
from mbbench.models.neobert import NeoBert
from mbbench.models.spec import ModelSpec

# One vocabulary of backend names for every model; transformers' own names for the same kernels.
HF_ATTENTION = {"eager": "eager", "sdpa": "sdpa", "flex": "flex_attention", "flash": "flash_attention_2"}
HF_SUPPORT_FLAG = {"eager": None, "sdpa": "_supports_sdpa", "flex": "_supports_flex_attn",
                   "flash": "_supports_flash_attn"}
# Tiny variants (same code path, few parameters) for tests and smoke runs. The vocabulary keeps every
# token id the paper's suites draw ([100, 16000)), so a tiny model runs the same batches as a real one.
TINY_VOCAB = 16384
TINY_SHAPES = {
    "hf": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128),
    "reference": dict(hidden_size=64, intermediate_size=96, num_layers=4, num_heads=4),
    "neobert": dict(hidden_size=64, num_layers=2, num_heads=4, ffn_size=192),
}


@dataclass(frozen=True)
class BuildOptions:
    """How to build a model: torch device (with index, e.g. "cuda:1"), dtype, attention backend, seed."""

    device: str = "cpu"
    dtype: torch.dtype = torch.float32
    backend: str = "auto"
    seed: int = 0
    weights: str | None = None  # a local checkpoint directory
    gemm: str = DEFAULT_GEMM  # our own models' linears (`models.gemm.KERNELS`); transformers models run their own


class Builder:
    """The operations every kind provides; subclasses fill them in."""

    rotary_code = "transformers"  # whose RoPE code runs (hardware.software.ROTARY_CODES), for the perf model
    owns_gemms = False  # whether the linears are our code (`BuildOptions.gemm` applies), not transformers'

    def available(self, spec: ModelSpec) -> str | None:
        """None when the model can be built with the software here, else why not."""
        return None

    def config(self, spec: ModelSpec, tiny: bool = False):
        raise NotImplementedError

    def module(self, spec: ModelSpec, cfg, backend: str) -> nn.Module:
        """The bare module with default-initialised weights (possibly on the meta device)."""
        raise NotImplementedError

    def backends(self, spec: ModelSpec) -> list[str]:
        raise NotImplementedError

    def encoder(self, spec: ModelSpec, options: BuildOptions, tiny: bool = False) -> Encoder:
        raise NotImplementedError

    def load_weights(self, spec: ModelSpec, module: nn.Module, path: str, expected_cfg) -> nn.Module:
        raise NotImplementedError

    def shape(self, spec: ModelSpec, tiny: bool = False) -> Shape:
        raise NotImplementedError

    def parameters(self, spec: ModelSpec, tiny: bool = False) -> int:
        """Parameters of the bare encoder, counted on the meta device (nothing is allocated)."""
        cfg = self.config(spec, tiny)
        with torch.device("meta"):
            module = self.module(spec, cfg, "eager")
        return sum(p.numel() for p in module.parameters())

    def choose(self, spec: ModelSpec, backend: str, device: str, dtype: torch.dtype,
               lengths: Sequence[int]) -> BackendChoice:
        """The backend that will run for `backend` on this workload, and why (`auto` chooses by workload)."""
        if backend != "auto":
            return BackendChoice(backend, "asked for")
        return choose_backend(torch.device(device), dtype, lengths, needs_window=spec.window is not None)

    def check_runs(self, spec: ModelSpec, backend: str, device: str, dtype: torch.dtype) -> None:
        """UserError (BackendUnavailable) when `backend`, asked for by name, cannot run on `device` in `dtype`."""
        if backend != "auto":
            get_backend(backend, torch.device(device), dtype, needs_window=spec.window is not None)

    def check_backend(self, spec: ModelSpec, backend: str) -> None:
        """UserError when `backend` is not one this model can take (availability on a device is separate)."""
        choices = ["auto", *self.backends(spec)]
        if backend not in choices:
            raise UserError(f"{spec.name} takes --backend {', '.join(choices)}; got {backend!r}")


# ---------------------------------------------------------------------------------------- our own modules

class PackedBuilder(Builder):
    """Shared by our own packed encoders (reference ModernBERT and NeoBERT)."""

    rotary_code = "mbbench"  # modernbert.apply_rotary
    owns_gemms = True

    module_class: type = nn.Module
    tiny_key: str = ""

    def config(self, spec, tiny=False):
        cfg = spec.make_config()
        if not tiny:
            return cfg
        return replace(cfg, **TINY_SHAPES[self.tiny_key], vocab_size=min(cfg.vocab_size, TINY_VOCAB), pad_token_id=0)

    def module(self, spec, cfg, backend):
        return self.module_class(cfg, backend)

    def backends(self, spec):
        names = backend_names()
        return [n for n in names if n != "xformers"] if spec.window is not None else names

    def encoder(self, spec, options, tiny=False):
        cfg = self.config(spec, tiny)
        module = self.module(spec, cfg, options.backend)
        init_weights(module, options.seed)
        if options.weights:
            module = self.load_weights(spec, module, options.weights, cfg)
        module = module.to(device=torch.device(options.device), dtype=options.dtype).eval()
        if options.gemm != DEFAULT_GEMM:
            if torch.device(options.device).type != "cpu" or not onednn_available():
                raise UserError(f"GEMM kernel {options.gemm} runs on CPUs with oneDNN; device is {options.device}")
            pack(module, options.gemm)  # after the weights are final: loaded, cast and moved
        return PackedEncoder(module, options.gemm)


class ReferenceBuilder(PackedBuilder):
    module_class = ModernBert
    tiny_key = "reference"

    def load_weights(self, spec, module, path, expected_cfg):
        config, state = weights.read_checkpoint(path)
        weights.check_checkpoint(expected_cfg, weights.checkpoint_config(config, path), spec.name)
        return weights.load_state(module, state)

    def shape(self, spec, tiny=False):
        cfg = self.config(spec, tiny)
        return Shape(hidden=cfg.hidden_size, ffn=cfg.intermediate_size, gated=True, heads=cfg.num_heads,
                     layers=cfg.num_layers, vocab=cfg.vocab_size, window=cfg.half_window,
                     global_every=cfg.global_every, unpadded=True, rotary=True)


class NeoBertBuilder(PackedBuilder):
    module_class = NeoBert
    tiny_key = "neobert"

    def load_weights(self, spec, module, path, expected_cfg):
        raise UserError(f"{spec.name}: loading checkpoints is supported for ModernBERT-architecture and "
                        "transformers models; NeoBERT runs with seeded random weights")

    def shape(self, spec, tiny=False):
        cfg = self.config(spec, tiny)
        return Shape(hidden=cfg.hidden_size, ffn=cfg.swiglu_hidden, gated=True, heads=cfg.num_heads,
                     layers=cfg.num_layers, vocab=cfg.vocab_size, window=None, global_every=1, unpadded=True,
                     rotary=True)


# --------------------------------------------------------------------------------------- transformers models

class HFBuilder(Builder):
    """A transformers model class from the catalogue row's `hf_class` and config keyword arguments."""

    def _transformers(self):
        import transformers  # lazily: a second of start-up that commands without transformers models skip

        return transformers

    def available(self, spec):
        transformers = self._transformers()
        missing = [name for name in (spec.hf_class, spec.hf_class.replace("Model", "Config"))
                   if not hasattr(transformers, name)]
        if missing:
            return (f"needs {spec.requires or 'a newer transformers'} ({missing[0]}); "
                    f"{transformers.__version__} is installed")
        return None

    def _require(self, spec) -> None:
        reason = self.available(spec)
        if reason:
            raise UserError(f"{spec.name} {reason}")

    def config(self, spec, tiny=False):
        self._require(spec)
        cfg = getattr(self._transformers(), spec.hf_class.replace("Model", "Config"))(**spec.config_kwargs)
        if tiny:
            for key, value in TINY_SHAPES["hf"].items():
                setattr(cfg, key, value)
            if hasattr(cfg, "num_key_value_heads"):
                cfg.num_key_value_heads = cfg.num_attention_heads
            cfg.vocab_size = min(cfg.vocab_size, TINY_VOCAB)
            cfg.pad_token_id = min(cfg.pad_token_id or 0, 3)
            for key in ("bos_token_id", "eos_token_id", "cls_token_id", "sep_token_id"):
                if getattr(cfg, key, None) is not None:
                    setattr(cfg, key, 2)
        cfg._attn_implementation = "eager"
        return cfg

    def module(self, spec, cfg, backend):
        self._require(spec)
        return getattr(self._transformers(), spec.hf_class)(cfg)

    def backends(self, spec):
        if self.available(spec):
            return []
        cls = getattr(self._transformers(), spec.hf_class)
        return [name for name, flag in HF_SUPPORT_FLAG.items() if flag is None or getattr(cls, flag, False)]

    def choose(self, spec, backend, device, dtype, lengths):
        if backend != "auto":
            return BackendChoice(backend, "asked for")
        name = self.resolve_backend(spec, backend)
        return BackendChoice(name, f"transformers' default for {spec.hf_class}: {HF_ATTENTION[name]} on padded rows")

    def check_runs(self, spec, backend, device, dtype):
        if backend == "flash" and (torch.device(device).type != "cuda" or not _importable("flash_attn")):
            raise BackendUnavailable(f"{spec.name} --backend flash runs transformers' flash_attention_2, which "
                                     "needs a CUDA GPU and flash-attn (pip install 'mbbench[flash]')")

    def resolve_backend(self, spec, backend: str) -> str:
        """Our backend name that runs for `backend` (auto: sdpa where transformers supports it, else eager)."""
        supported = self.backends(spec)
        if backend == "auto":
            backend = "sdpa" if "sdpa" in supported else "eager"
        self.check_backend(spec, backend)
        return backend

    def _seeded(self, spec, cfg, seed: int) -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # transformers initialises from the global generator
            return self.module(spec, cfg, "eager")

    def load_weights(self, spec, module, path, expected_cfg):
        _, state = weights.read_checkpoint(path)
        prefix = getattr(module, "base_model_prefix", "") + "."
        state = {k.removeprefix(prefix): v for k, v in state.items()}
        weights.check_shapes(module, state, path)
        missing, _ = module.load_state_dict(state, strict=False)
        if missing:
            raise UserError(f"{path}: checkpoint lacks {len(missing)} tensors of {spec.name}, e.g. {missing[:3]}")
        return module

    def encoder(self, spec, options, tiny=False):
        cfg = self.config(spec, tiny)
        backend = self.resolve_backend(spec, options.backend)
        cfg._attn_implementation = HF_ATTENTION[backend]  # transformers' name for the same kernel
        module = self._seeded(spec, cfg, options.seed)
        if options.weights:
            module = self.load_weights(spec, module, options.weights, cfg)
        return HFPaddedEncoder(module.to(device=torch.device(options.device), dtype=options.dtype).eval(), backend)

    def shape(self, spec, tiny=False):
        cfg = self.config(spec, tiny)
        heads = cfg.num_attention_heads
        disentangled = bool(getattr(cfg, "relative_attention", False))  # DeBERTa's c2p/p2c attention
        buckets = getattr(cfg, "position_buckets", -1) if disentangled else 0
        if disentangled and buckets <= 0:  # no log buckets: the span is the relative-position range itself
            buckets = getattr(cfg, "max_relative_positions", -1)
            buckets = buckets if buckets > 0 else getattr(cfg, "max_position_embeddings", 512)
        kv_heads = getattr(cfg, "num_key_value_heads", None)
        return Shape(hidden=cfg.hidden_size, ffn=cfg.intermediate_size, gated=spec.gated_ffn, heads=heads,
                     layers=cfg.num_hidden_layers, vocab=cfg.vocab_size, window=spec.window,
                     global_every=getattr(cfg, "global_attn_every_n_layers", 1) or 1, unpadded=False,
                     attention_kind="disentangled" if disentangled else "standard", position_buckets=buckets,
                     rotary=spec.gated_ffn, kv_heads=kv_heads if kv_heads and kv_heads != heads else None)


class HFPackedBuilder(HFBuilder):
    """The paper's "GTE (xformers)" row: a transformers model on packed tokens through our backends."""

    check_runs = Builder.check_runs  # our packed backends, as for our own models

    def choose(self, spec, backend, device, dtype, lengths):
        if backend != "auto":
            return BackendChoice(backend, "asked for")
        if _runs("xformers", torch.device(device), dtype):
            return BackendChoice("xformers", "the paper's GTE row ran xformers memory-efficient attention")
        return choose_backend(torch.device(device), dtype, lengths, needs_window=False)

    def backends(self, spec):
        return [] if self.available(spec) else backend_names()

    def encoder(self, spec, options, tiny=False):
        cfg = self.config(spec, tiny)
        device = torch.device(options.device)
        backend = options.backend
        if backend == "auto":  # the paper's row ran xformers; else the fastest packed kernel here
            backend = "xformers" if _runs("xformers", device, options.dtype) else get_backend(
                "auto", device, options.dtype, needs_window=False).name
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(options.seed)
            module, attention = packed_hf_model(getattr(self._transformers(), spec.hf_class), cfg, backend, device,
                                                options.dtype, {None})
        if options.weights:
            module = self.load_weights(spec, module, options.weights, cfg)
        return HFPackedEncoder(module.to(device=device, dtype=options.dtype).eval(), attention, {None})

    def shape(self, spec, tiny=False):
        return replace(super().shape(spec, tiny), unpadded=True)


def _importable(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _runs(name: str, device: torch.device, dtype: torch.dtype) -> bool:
    try:
        get_backend(name, device, dtype, needs_window=False)
        return True
    except BackendUnavailable:
        return False


BUILDERS: dict[str, Builder] = {"reference": ReferenceBuilder(), "neobert": NeoBertBuilder(), "hf": HFBuilder(),
                                "hf-packed": HFPackedBuilder()}
