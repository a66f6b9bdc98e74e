"""Load Hugging Face ModernBERT weights into the reference model, from memory or from disk (no network)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn as nn

from mbbench.errors import UserError
from mbbench.models.config import ModernBertConfig
from mbbench.models.modernbert import ModernBert, ModernBertForMaskedLM


def config_from_hf(hf_config) -> ModernBertConfig:
    """Our config from a transformers `ModernBertConfig` (object or config.json dict)."""
    get = (lambda key, default=None: hf_config.get(key, default)) if isinstance(hf_config, dict) \
        else (lambda key, default=None: getattr(hf_config, key, default))
    rope = get("rope_parameters") or {}
    global_theta = (rope.get("full_attention") or {}).get("rope_theta", get("global_rope_theta", 160_000.0))
    local_theta = (rope.get("sliding_attention") or {}).get("rope_theta", get("local_rope_theta", 10_000.0))
    if get("norm_bias", False) or get("attention_bias", False) or get("mlp_bias", False):
        raise UserError("checkpoint uses biases in norms or linears; the reference ModernBERT has none")
    if get("hidden_activation", "gelu") != "gelu":
        raise UserError(f"checkpoint activation {get('hidden_activation')!r} is not ModernBERT's exact GELU")
    return ModernBertConfig(
        hidden_size=get("hidden_size"), intermediate_size=get("intermediate_size"),
        num_layers=get("num_hidden_layers"), num_heads=get("num_attention_heads"), vocab_size=get("vocab_size"),
        max_position_embeddings=get("max_position_embeddings", 8192), local_window=get("local_attention", 128),
        global_every=get("global_attn_every_n_layers", 3), global_rope_theta=float(global_theta),
        local_rope_theta=float(local_theta), norm_eps=get("norm_eps", 1e-5), pad_token_id=get("pad_token_id", 50283),
    )


def _encoder_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keep the bare encoder's tensors; MaskedLM checkpoints prefix them with `model.`."""
    if any(key.startswith("model.") for key in state):
        return {key[len("model."):]: value for key, value in state.items() if key.startswith("model.")}
    return dict(state)


def load_state(model: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    """Copy a transformers state dict into our model, strictly: every tensor must have a home."""
    encoder = model.model if isinstance(model, ModernBertForMaskedLM) else model
    missing, unexpected = encoder.load_state_dict(_encoder_state(state), strict=False)
    if missing or unexpected:
        raise UserError(f"checkpoint does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    if isinstance(model, ModernBertForMaskedLM):
        head = {key[len("head."):]: value for key, value in state.items() if key.startswith("head.")}
        if not head:
            raise UserError("checkpoint has no MLM head (head.*): load it into the bare encoder instead")
        model.head.load_state_dict(head)
        if "decoder.bias" in state:
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


def read_checkpoint(path: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """config.json + *.safetensors (or pytorch_model.bin) from a local directory."""
    path = Path(path)
    config_file = path / "config.json"
    if not config_file.is_file():
        raise UserError(f"{path}: no config.json (expected a Hugging Face checkpoint directory)")
    config = json.loads(config_file.read_text())
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


def from_checkpoint(path: str | Path, backend: str = "auto", mlm: bool = False) -> nn.Module:
    config, state = read_checkpoint(path)
    if config.get("model_type", "modernbert") != "modernbert":
        raise UserError(f"{path}: model_type {config.get('model_type')!r} is not modernbert")
    model = (ModernBertForMaskedLM if mlm else ModernBert)(config_from_hf(config), backend)
    return load_state(model, state).eval()
