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
from dataclasses import dataclass, fields, replace
from typing import Sequence

import torch
import torch.nn as nn
from safetensors import SafetensorError

from mbbench.errors import BackendUnavailable, UserError
from mbbench.hardware.shape import Shape
from mbbench.models import weights
from mbbench.models.attention import BackendChoice, backend_names, choose_backend, get_backend
from mbbench.models.encoders import (PACKED_ATTENTION, Encoder, HFPackedEncoder, HFPaddedEncoder, PackedEncoder,
                                     packed_attention)
from mbbench.models.gemm import TORCH as DEFAULT_GEMM
from mbbench.models.gemm import onednn_available, pack
from mbbench.models.elementwise import EAGER as DEFAULT_ELEMENTWISE
from mbbench.models.elementwise import use as use_elementwise
from mbbench.models.modernbert import ModernBert, init_weights
from mbbench.models.neobert import NeoBert
from mbbench.models.spec import ModelSpec
from mbbench.records import ConfigChange

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
# transformers config fields that fix the shape a catalogue row promises: widths, depth, heads, vocabulary,
# positions, the attention pattern. A checkpoint that differs in one is another model and is refused; any
# other field (norm eps, activation, RoPE theta, dropout, token ids) is what that checkpoint runs, recorded.
# Fields not listed that still change the shape are caught by comparing `Shape`s and tensor shapes.
SHAPE_FIELDS = frozenset({
    "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
    "head_dim", "vocab_size", "max_position_embeddings", "type_vocab_size",
    "relative_attention", "position_buckets", "max_relative_positions", "pos_att_type", "share_att_key",
    "position_biased_input", "local_attention", "global_attn_every_n_layers", "layer_types", "sliding_window"})
NO_NEOBERT_CHECKPOINTS = ("{name}: loading checkpoints is supported for ModernBERT-architecture and transformers "
                          "models; NeoBERT runs with seeded random weights")
# config.json fields about the file, not the model (the run's dtype is --dtype)
FILE_FIELDS = frozenset({"transformers_version", "architectures", "_name_or_path", "dtype", "torch_dtype"})


@dataclass(frozen=True)
class BuildOptions:
    """How to build a model: torch device (with index, e.g. "cuda:1"), dtype, attention backend, seed."""

    device: str = "cpu"
    dtype: torch.dtype = torch.float32
    backend: str = "auto"
    seed: int = 0
    weights: str | None = None  # a local checkpoint directory
    gemm: str = DEFAULT_GEMM  # our own models' linears (`models.gemm.KERNELS`); transformers models run their own
    elementwise: str = DEFAULT_ELEMENTWISE  # our own models' RoPE and gated activation (`models.elementwise.KERNELS`)


class Builder:
    """The operations every kind provides; subclasses fill them in."""

    rotary_code = "transformers"  # whose RoPE code runs (hardware.software.ROTARY_CODES), for the perf model
    owns_gemms = False  # whether the linears are our code (`BuildOptions.gemm` applies), not transformers'
    gated_activation = ""  # our own models' gated MLP activation ("gelu", "silu"; `BuildOptions.elementwise`)

    def available(self, spec: ModelSpec) -> str | None:
        """None when the model can be built with the software here, else why not."""
        return None

    def config(self, spec: ModelSpec):
        raise NotImplementedError

    def module(self, spec: ModelSpec, cfg, backend: str) -> nn.Module:
        """The bare module with default-initialised weights (possibly on the meta device)."""
        raise NotImplementedError

    def backends(self, spec: ModelSpec) -> list[str]:
        raise NotImplementedError

    def encoder(self, spec: ModelSpec, options: BuildOptions) -> Encoder:
        raise NotImplementedError

    def checkpoint_changes(self, spec: ModelSpec, path: str) -> tuple[ConfigChange, ...]:
        """The config fields in which the checkpoint directory `path` (`--weights`) differs from the row: what
        the built model will run with. Raises UserError for a checkpoint the row cannot be (another
        architecture or shape), or one that has no readable config."""
        raise NotImplementedError

    def shape(self, spec: ModelSpec) -> Shape:
        raise NotImplementedError

    def parameters(self, spec: ModelSpec) -> int:
        """Parameters of the bare encoder, counted on the meta device (nothing is allocated)."""
        cfg = self.config(spec)
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

    rotary_code = "mbbench"  # elementwise.apply_rotary
    owns_gemms = True

    module_class: type = nn.Module
    tiny_key: str = ""

    def config(self, spec):
        cfg = spec.make_config()
        if not spec.tiny:
            return cfg
        return replace(cfg, **TINY_SHAPES[self.tiny_key], vocab_size=min(cfg.vocab_size, TINY_VOCAB), pad_token_id=0)

    def module(self, spec, cfg, backend):
        return self.module_class(cfg, backend)

    def backends(self, spec):
        names = backend_names()
        return [n for n in names if n != "xformers"] if spec.window is not None else names

    def encoder(self, spec, options):
        cfg = self.config(spec)
        module = self.module(spec, cfg, options.backend)
        init_weights(module, options.seed)
        if options.weights:
            module = self.load_weights(spec, module, options.weights, cfg)
        module = module.to(device=torch.device(options.device), dtype=options.dtype).eval()
        if options.gemm != DEFAULT_GEMM:
            if torch.device(options.device).type != "cpu" or not onednn_available(options.dtype):
                raise UserError(f"GEMM kernel {options.gemm} runs on CPUs with oneDNN; device is {options.device}")
            pack(module, options.gemm)  # after the weights are final: loaded, cast and moved
        use_elementwise(module, options.elementwise)
        return PackedEncoder(module, options.gemm, options.elementwise)


class ReferenceBuilder(PackedBuilder):
    module_class = ModernBert
    tiny_key = "reference"
    gated_activation = "gelu"

    def checkpoint_changes(self, spec, path):
        # our modules take no config from a checkpoint: every field must equal the row's (field by field)
        weights.check_checkpoint(self.config(spec), weights.checkpoint_config(weights.read_config(path), path),
                                 spec.name)
        return ()

    def load_weights(self, spec, module, path, expected_cfg):
        config, state = weights.read_checkpoint(path)
        weights.check_checkpoint(expected_cfg, weights.checkpoint_config(config, path), spec.name)
        return weights.load_state(module, state)

    def shape(self, spec):
        cfg = self.config(spec)
        return Shape(hidden=cfg.hidden_size, ffn=cfg.intermediate_size, gated=True, heads=cfg.num_heads,
                     layers=cfg.num_layers, vocab=cfg.vocab_size, window=cfg.half_window,
                     global_every=cfg.global_every, unpadded=True, rotary=True)


class NeoBertBuilder(PackedBuilder):
    module_class = NeoBert
    tiny_key = "neobert"
    gated_activation = "silu"

    def checkpoint_changes(self, spec, path):
        raise UserError(NO_NEOBERT_CHECKPOINTS.format(name=spec.name))

    def load_weights(self, spec, module, path, expected_cfg):
        raise UserError(NO_NEOBERT_CHECKPOINTS.format(name=spec.name))

    def shape(self, spec):
        cfg = self.config(spec)
        return Shape(hidden=cfg.hidden_size, ffn=cfg.swiglu_hidden, gated=True, heads=cfg.num_heads,
                     layers=cfg.num_layers, vocab=cfg.vocab_size, window=None, global_every=1, unpadded=True,
                     rotary=True)


# --------------------------------------------------------------------------------------- transformers models

class HFBuilder(Builder):
    """A transformers model class from the catalogue row's `hf_class` and config keyword arguments.

    With `--weights`, the model is built from the checkpoint's own config.json (after refusing a checkpoint
    the row cannot be) and loaded by transformers' `from_pretrained`, which knows each class's saved key names
    (GTE and NomicBERT save under other names than their modules use).
    """

    def _transformers(self):
        import transformers  # lazily: a second of start-up that commands without transformers models skip

        return transformers

    def _config_class(self, spec):
        return getattr(self._transformers(), spec.hf_class.replace("Model", "Config"))

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

    def config(self, spec):
        self._require(spec)
        config_class = self._config_class(spec)
        cfg = config_class(**spec.config_kwargs)
        if spec.tiny:  # through the constructor again, so derived fields (ModernBERT's layer_types) follow the shape
            cfg = config_class(**{**spec.config_kwargs, **_tiny_overrides(cfg)})
        cfg._attn_implementation = "eager"
        return cfg

    def checkpoint_config(self, spec: ModelSpec, path: str):
        """(the checkpoint's transformers config, its `ConfigChange`s from the row's config).

        Raises UserError for a config.json of another model type, one transformers rejects, or one whose shape
        differs from the row's (`SHAPE_FIELDS`, the performance model's `Shape`, or any tensor's shape).
        """
        row = self.config(spec)
        saved = weights.read_config(path)
        config_class = self._config_class(spec)
        if saved.get("model_type", config_class.model_type) != config_class.model_type:
            raise UserError(f"--weights {path}: model_type {saved['model_type']!r} is not {spec.name}'s "
                            f"{config_class.model_type!r} ({spec.hf_class})")
        try:
            cfg = config_class.from_dict(saved)
        except Exception as error:  # transformers validates its fields (types, layer_types' length, ...)
            raise UserError(f"--weights {path}: config.json is not a valid {config_class.__name__}: "
                            f"{_one_line(error)}") from None
        cfg._attn_implementation = "eager"
        changes = config_changes(row, cfg)
        self._refuse_other_shape(spec, row, cfg, changes, f"--weights {path}")
        return cfg, changes

    def checkpoint_changes(self, spec, path):
        return self.checkpoint_config(spec, path)[1]

    def _refuse_other_shape(self, spec, row, cfg, changes: tuple[ConfigChange, ...], source: str) -> None:
        """UserError naming the first kind of shape difference: a listed field, the `Shape`, a tensor's shape."""
        what = f"{source} is not a {spec.name} checkpoint"
        fixed = [c for c in changes if c.field in SHAPE_FIELDS]
        if fixed:
            raise UserError(f"{what}: " + "; ".join(f"{c.field} {c.ran!r} (the row's is {c.row!r})" for c in fixed)
                            + "; a row's shape is fixed, only fields like eps, activation or RoPE theta may vary")
        row_shape, shape = self._shape(spec, row), self._shape(spec, cfg)
        if shape != row_shape:
            differ = [f"{f.name} {getattr(shape, f.name)!r} (the row's is {getattr(row_shape, f.name)!r})"
                      for f in fields(Shape) if getattr(shape, f.name) != getattr(row_shape, f.name)]
            raise UserError(f"{what}: its config gives another shape: {'; '.join(differ)}")
        with torch.device("meta"):  # nothing allocated
            row_tensors, tensors = (_tensor_shapes(self.module(spec, c, "eager")) for c in (row, cfg))
        if tensors != row_tensors:
            differ = sorted(set(row_tensors.items()) ^ set(tensors.items()))
            raise UserError(f"{what}: its config ({', '.join(c.field for c in changes)}) gives other tensors, "
                            f"e.g. {', '.join(f'{name} {size}' for name, size in differ[:3])}")

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

    def _instance(self, spec, options: BuildOptions, attention: str) -> nn.Module:
        """The transformers module running `attention` (transformers' name): the checkpoint's config and weights
        with `options.weights`, else the row's config with weights seeded by `options.seed`."""
        if options.weights:
            cfg, _ = self.checkpoint_config(spec, options.weights)
            return self._pretrained(spec, cfg, options.weights, attention, options.dtype)
        cfg = self.config(spec)
        cfg._attn_implementation = attention
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(options.seed)  # transformers initialises from the global generator
            return self.module(spec, cfg, "eager")

    def _pretrained(self, spec, cfg, path: str, attention: str, dtype: torch.dtype) -> nn.Module:
        """transformers' own loader (its key renaming per class), refusing a checkpoint that leaves a tensor
        missing or of another shape (from_pretrained would initialise it randomly and only warn)."""
        model_class = getattr(self._transformers(), spec.hf_class)
        try:
            module, info = model_class.from_pretrained(path, config=cfg, attn_implementation=attention, dtype=dtype,
                                                       local_files_only=True, output_loading_info=True)
        except (OSError, ValueError, RuntimeError, SafetensorError) as error:  # no, unreadable or mis-shaped weights
            raise UserError(f"--weights {path}: transformers cannot load it as {spec.hf_class}: "
                            f"{_one_line(error)}") from None
        missing, mismatched = sorted(info["missing_keys"]), sorted(info["mismatched_keys"])
        if missing or mismatched:
            raise UserError(f"--weights {path}: the checkpoint lacks {len(missing)} and has {len(mismatched)} "
                            f"mis-shaped tensors of {spec.name}, e.g. {(missing + [str(m) for m in mismatched])[:3]}")
        return module

    def encoder(self, spec, options):
        backend = self.resolve_backend(spec, options.backend)
        module = self._instance(spec, options, HF_ATTENTION[backend])  # transformers' name for the kernel
        return HFPaddedEncoder(module.to(device=torch.device(options.device), dtype=options.dtype).eval(), backend)

    def shape(self, spec):
        return self._shape(spec, self.config(spec))

    def _shape(self, spec, cfg) -> Shape:
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

    def encoder(self, spec, options):
        device = torch.device(options.device)
        backend = options.backend
        if backend == "auto":  # the paper's row ran xformers; else the fastest packed kernel here
            backend = "xformers" if _runs("xformers", device, options.dtype) else get_backend(
                "auto", device, options.dtype, needs_window=False).name
        attention = packed_attention(backend, device, options.dtype, {None})
        module = self._instance(spec, options, PACKED_ATTENTION)
        return HFPackedEncoder(module.to(device=device, dtype=options.dtype).eval(), attention, {None})

    def shape(self, spec):
        return replace(super().shape(spec), unpadded=True)


def _tiny_overrides(cfg) -> dict:
    """Config keywords of a row's tiny variant: `TINY_SHAPES["hf"]`, a vocabulary that keeps the suites' ids,
    and every special token id inside it."""
    overrides = dict(TINY_SHAPES["hf"], vocab_size=min(cfg.vocab_size, TINY_VOCAB),
                     pad_token_id=min(cfg.pad_token_id or 0, 3))
    if hasattr(cfg, "num_key_value_heads"):
        overrides["num_key_value_heads"] = overrides["num_attention_heads"]
    for key in ("bos_token_id", "eos_token_id", "cls_token_id", "sep_token_id", "mask_token_id"):
        if getattr(cfg, key, None) is not None:
            overrides[key] = 2
    return overrides


def config_changes(row, checkpoint) -> tuple[ConfigChange, ...]:
    """Every field in which two transformers configs of one class differ (file metadata left out), by name."""
    ours, theirs = row.to_dict(), checkpoint.to_dict()
    return tuple(ConfigChange(name, ours.get(name), theirs.get(name)) for name in sorted(set(ours) | set(theirs))
                 if name not in FILE_FIELDS and ours.get(name) != theirs.get(name))


def _tensor_shapes(module: nn.Module) -> dict[str, tuple[int, ...]]:
    return {name: tuple(tensor.shape) for name, tensor in module.state_dict().items()}


def _one_line(error: BaseException) -> str:
    return " ".join(line.strip() for line in str(error).splitlines() if line.strip())[:400]


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
