"""Load Hugging Face ModernBERT weights into the reference model, from memory or from disk (no network).

A checkpoint's function is defined by its config as transformers reads it, so a `config.json` is first
normalised by transformers' own `ModernBertConfig` (legacy `global_attn_every_n_layers` /
`global_rope_theta` keys and the v5 `layer_types` / `rope_parameters` layout alike), then every shape and
attention field is read from that. Source: transformers `configuration_modernbert.py` (v5 era).
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import torch
import torch.nn as nn

from mbbench.errors import UserError
from mbbench.models.config import ModernBertConfig
from mbbench.models.modernbert import ModernBert, ModernBertForMaskedLM

FULL, SLIDING = "full_attention", "sliding_attention"
EXACT_GELU = ("gelu", "gelu_python")  # transformers' names for the erf GELU


def _normalised_hf_config(hf_config):
    """A config.json dict -> transformers' ModernBertConfig object (objects pass through unchanged)."""
    if not isinstance(hf_config, dict):
        return hf_config
    from transformers import ModernBertConfig as HFConfig

    try:
        return HFConfig.from_dict(hf_config)
    except Exception as error:  # transformers validates field types (e.g. a flat rope_parameters)
        detail = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
        raise UserError(f"config.json is not a valid transformers ModernBertConfig: {detail[:400]}") from None


def _global_every(hf_config, num_layers: int) -> int:
    """n such that layer i is global iff i % n == 0, from `layer_types` (v5) or the legacy key."""
    layer_types = getattr(hf_config, "layer_types", None)
    if layer_types is None:
        return int(getattr(hf_config, "global_attn_every_n_layers", 3))
    # transformers reads layer_types[i] for layer i, so a longer list (e.g. num_hidden_layers lowered after
    # the config was built) counts by its first num_layers entries
    if len(layer_types) < num_layers or set(layer_types) - {FULL, SLIDING}:
        raise UserError(f"checkpoint layer_types {layer_types} must list {num_layers} entries of "
                        f"{FULL!r} or {SLIDING!r}")
    layer_types = list(layer_types[:num_layers])
    globals_ = [i for i, kind in enumerate(layer_types) if kind == FULL]
    every = globals_[1] - globals_[0] if len(globals_) > 1 else max(num_layers, 1)
    if not globals_ or globals_[0] != 0 or globals_ != list(range(0, num_layers, every)):
        raise UserError(f"checkpoint layer_types {layer_types} is not 'global every n layers from layer 0'; "
                        "the reference ModernBERT cannot express it")
    return every


def _rope_thetas(hf_config) -> tuple[float, float]:
    """(global θ, local θ): `rope_parameters` per layer type (v5) or the legacy theta keys."""
    rope = getattr(hf_config, "rope_parameters", None) or {}
    thetas = {}
    for kind, legacy, default in ((FULL, "global_rope_theta", 160_000.0), (SLIDING, "local_rope_theta", 10_000.0)):
        params = rope.get(kind) or {}
        if params.get("rope_type", "default") != "default":
            raise UserError(f"checkpoint uses RoPE scaling {params.get('rope_type')!r} on {kind} layers; "
                            "the reference ModernBERT implements only default RoPE")
        thetas[kind] = float(params.get("rope_theta", getattr(hf_config, legacy, default)))
    return thetas[FULL], thetas[SLIDING]


def _refuse_unsupported(hf_config) -> None:
    if any(getattr(hf_config, key, False) for key in ("norm_bias", "attention_bias", "mlp_bias")):
        raise UserError("checkpoint uses biases in norms or linears; the reference ModernBERT has none")
    activation = getattr(hf_config, "hidden_activation", "gelu")
    if activation not in EXACT_GELU:
        raise UserError(f"checkpoint activation {activation!r} is not ModernBERT's exact GELU")


def config_from_hf(hf_config) -> ModernBertConfig:
    """Our config from a transformers `ModernBertConfig` object or a config.json dict.

    Reads hidden/intermediate size, layers, heads, vocabulary, max positions, norm eps, pad id, the local
    window (`local_attention`, the total window: 128 means |i - j| <= 64), which layers are global
    (`layer_types`, or legacy `global_attn_every_n_layers`) and both RoPE thetas (`rope_parameters`, or
    legacy `global_rope_theta`/`local_rope_theta`); a missing field takes transformers' default.
    Raises UserError for a config transformers rejects or one the reference cannot express (biases,
    another activation, scaled RoPE, an irregular global/local pattern).
    """
    hf = _normalised_hf_config(hf_config)
    _refuse_unsupported(hf)
    get = lambda key, default=None: getattr(hf, key, default)  # noqa: E731
    global_theta, local_theta = _rope_thetas(hf)
    num_layers = get("num_hidden_layers", 22)
    pad = get("pad_token_id")
    # the pad id only marks the embedding's padding row; with none, any in-vocabulary id is equivalent
    pad = 0 if pad is None else pad
    return ModernBertConfig(
        hidden_size=get("hidden_size", 768), intermediate_size=get("intermediate_size", 1152),
        num_layers=num_layers, num_heads=get("num_attention_heads", 12), vocab_size=get("vocab_size", 50368),
        max_position_embeddings=get("max_position_embeddings", 8192), local_window=get("local_attention", 128),
        global_every=_global_every(hf, num_layers), global_rope_theta=global_theta, local_rope_theta=local_theta,
        norm_eps=float(get("norm_eps", 1e-5)), pad_token_id=pad,
    )


def config_differences(expected: ModernBertConfig, checkpoint: ModernBertConfig) -> list[str]:
    """'field: model X, checkpoint Y' for every field in which the two configs differ."""
    return [f"{f.name}: model {getattr(expected, f.name)!r}, checkpoint {getattr(checkpoint, f.name)!r}"
            for f in fields(ModernBertConfig) if getattr(expected, f.name) != getattr(checkpoint, f.name)]


def check_checkpoint(expected: ModernBertConfig, checkpoint: ModernBertConfig, model_name: str) -> None:
    """Refuse to load a checkpoint into a model it does not describe.

    `expected` is the config of `--model model_name`; `checkpoint` is `config_from_hf(config.json)`.
    Raises UserError naming every differing field (e.g. a checkpoint with another window or RoPE θ would
    otherwise load into the model's default attention pattern and compute a different function).
    """
    differences = config_differences(expected, checkpoint)
    if differences:
        raise UserError(f"checkpoint is not a {model_name}: " + "; ".join(differences))


def _encoder_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keep the bare encoder's tensors; MaskedLM checkpoints prefix them with `model.`."""
    if any(key.startswith("model.") for key in state):
        return {key[len("model."):]: value for key, value in state.items() if key.startswith("model.")}
    return dict(state)


def check_shapes(module: nn.Module, state: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Raise UserError naming every tensor whose shape in `state` differs from `module`'s.

    Call before `module.load_state_dict(state)`, which would otherwise fail with a raw size-mismatch
    traceback (e.g. a large checkpoint loaded into a base model). Tensors absent on either side are
    left to the caller's missing/unexpected check.
    """
    own = module.state_dict()
    wrong = [f"{name}: {source} {tuple(tensor.shape)}, model {tuple(own[name].shape)}"
             for name, tensor in state.items() if name in own and tuple(tensor.shape) != tuple(own[name].shape)]
    if wrong:
        shown = "; ".join(wrong[:5]) + (f"; and {len(wrong) - 5} more" if len(wrong) > 5 else "")
        raise UserError(f"{source} tensors have other shapes than the model (another size?): {shown}")


def load_state(model: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    """Copy a transformers state dict into our model, strictly: every tensor must have a home.

    Raises UserError for missing/unexpected tensors and for any shape mismatch (naming tensor and shapes).
    """
    encoder = model.model if isinstance(model, ModernBertForMaskedLM) else model
    encoder_state = _encoder_state(state)
    check_shapes(encoder, encoder_state)
    missing, unexpected = encoder.load_state_dict(encoder_state, strict=False)
    if missing or unexpected:
        raise UserError(f"checkpoint does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    if isinstance(model, ModernBertForMaskedLM):
        head = {key[len("head."):]: value for key, value in state.items() if key.startswith("head.")}
        if not head:
            raise UserError("checkpoint has no MLM head (head.*): load it into the bare encoder instead")
        check_shapes(model.head, head, "checkpoint head")
        model.head.load_state_dict(head)
        if "decoder.bias" in state:
            check_shapes(model.decoder, {"bias": state["decoder.bias"]}, "checkpoint decoder")
            with torch.no_grad():
                model.decoder.bias.copy_(state["decoder.bias"])
    return model


def from_transformers(hf_model: nn.Module, backend: str = "auto") -> nn.Module:
    """Our model with the weights of a transformers ModernBertModel / ModernBertForMaskedLM instance."""
    cfg = config_from_hf(hf_model.config)
    mlm = type(hf_model).__name__.endswith("ForMaskedLM")
    weight = next(hf_model.parameters())
    model = (ModernBertForMaskedLM if mlm else ModernBert)(cfg, backend).to(device=weight.device, dtype=weight.dtype)
    return load_state(model, hf_model.state_dict()).eval()


def read_config(path: str | Path) -> dict:
    """A checkpoint directory's config.json as a dict; UserError when it is missing or not a JSON object."""
    config_file = Path(path) / "config.json"
    if not config_file.is_file():
        raise UserError(f"{path}: no config.json (expected a Hugging Face checkpoint directory)")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{config_file}: not valid UTF-8 JSON ({error})") from None
    if not isinstance(config, dict):
        raise UserError(f"{config_file}: not a JSON object")
    return config


def read_checkpoint(path: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """config.json + *.safetensors (or pytorch_model.bin) from a local directory, tensors under their saved names."""
    path = Path(path)
    config = read_config(path)
    state: dict[str, torch.Tensor] = {}
    shards = sorted(path.glob("*.safetensors"))
    if shards:
        from safetensors.torch import load_file

        for shard in shards:
            state.update(load_file(str(shard)))
    elif (path / "pytorch_model.bin").is_file():
        state = torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True)
    else:
        raise UserError(f"{path}: no *.safetensors or pytorch_model.bin weights")
    return config, state


def checkpoint_config(config: dict, path: str | Path = "checkpoint") -> ModernBertConfig:
    """Our config from a checkpoint's config.json dict; UserError unless its model_type is modernbert."""
    if config.get("model_type", "modernbert") != "modernbert":
        raise UserError(f"{path}: model_type {config.get('model_type')!r} is not modernbert")
    return config_from_hf(config)


def from_checkpoint(path: str | Path, backend: str = "auto", mlm: bool = False,
                    expected: ModernBertConfig | None = None, model_name: str = "model") -> nn.Module:
    """Our model built from a checkpoint directory's own config.json, holding its weights (eval mode).

    With `expected` (a named model's config), the checkpoint must describe that model: see
    `check_checkpoint`. Raises UserError for a missing/invalid config or weights, or mismatched tensors.
    """
    config, state = read_checkpoint(path)
    cfg = checkpoint_config(config, path)
    if expected is not None:
        check_checkpoint(expected, cfg, model_name)
    model = (ModernBertForMaskedLM if mlm else ModernBert)(cfg, backend)
    return load_state(model, state).eval()
