"""Exports cached on disk by identity, so preparing the same engine again does not export again.

An entry is a folder named by a hash of its identity (model, tiny flag, weights hash, dtype, engine name
and version, exporter settings); `identity.json` inside it repeats the identity in full so a person can
tell entries apart. An entry is written into a temporary folder and renamed into place, so a crash
mid-export never leaves a half-written entry that a later run would take for a hit.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from mbbench.dtypes import dtype_name
from mbbench.files import bounded_name, ordinary_mode, write_text
from mbbench.engines.base import ModelIdentity

IDENTITY_FILE = "identity.json"


def config_fingerprint(module: nn.Module) -> str:
    """sha256 (first 16 hex digits) of the module's whole config: a transformers config's JSON (every field, not only
    the differences from its defaults) or a dataclass config's fields; "" when the module has no config."""
    config = getattr(module, "config", None)
    if config is None:
        return ""
    if hasattr(config, "to_dict"):
        values = config.to_dict()
    elif dataclasses.is_dataclass(config):
        values = dataclasses.asdict(config)
    else:
        values = vars(config)
    values = {k: v for k, v in values.items() if k not in ("transformers_version", "_name_or_path")}
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:16]


def code_fingerprint(module: nn.Module) -> str:
    """sha256 (first 16 hex digits) of the source files that define the module's classes (every submodule's), with
    the versions of torch and transformers: what a trace runs through. Files that cannot be read are named only."""
    digest = hashlib.sha256(f"torch {torch.__version__}; transformers {_transformers_version()};".encode())
    files = sorted({inspect.getsourcefile(type(m)) or type(m).__module__ for m in module.modules()})
    for path in files:
        digest.update(path.encode())
        try:
            digest.update(Path(path).read_bytes())
        except OSError:
            pass
    return digest.hexdigest()[:16]


def _transformers_version() -> str:
    try:
        return metadata.version("transformers")
    except metadata.PackageNotFoundError:
        return "not installed"


def weights_fingerprint(module: nn.Module) -> str:
    """sha256 (first 16 hex digits) over every parameter and buffer: names, dtypes, shapes and bytes.

    Cost: one pass over the weights (about a second per GB on CPU); GPU weights are copied to the host.
    """
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())  # (numel * itemsize,) bytes
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class CacheEntry:
    path: Path  # the entry's folder
    hit: bool  # True: found on disk, nothing was exported


def identity_key(identity: dict) -> str:
    """A stable short hash of a JSON-able identity (keys sorted)."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def cached_export(root: Path, identity: dict, artefact: str, export: Callable[[Path], None]) -> CacheEntry:
    """The cache entry for `identity`, calling `export(folder)` to fill it only when it is not on disk.

    `artefact` is the file name `export` writes into the folder (e.g. "model.onnx"); an entry counts as a
    hit when that file and an identical identity.json are both there. Exceptions from `export` propagate
    and leave no entry behind.
    """
    root = Path(root)
    folder = root / bounded_name(f"{identity.get('model', 'model')}-{identity.get('engine', 'engine')}",
                                 identity_key(identity))
    if _is_entry(folder, identity, artefact):
        return CacheEntry(folder, hit=True)
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=root))
    try:
        export(staging)
        write_text(staging / IDENTITY_FILE, json.dumps(identity, indent=2, sort_keys=True))
        staging.chmod(ordinary_mode(directory=True))  # mkdtemp makes it 0700: others' tools could not read it
        if folder.exists() and not _is_entry(folder, identity, artefact):  # a stale or partial one under the key
            shutil.rmtree(folder, ignore_errors=True)
        try:
            os.replace(staging, folder)
        except OSError:  # another run sharing the cache put the same entry in place meanwhile: use theirs
            if not _is_entry(folder, identity, artefact):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return CacheEntry(folder, hit=False)


def _is_entry(folder: Path, identity: dict, artefact: str) -> bool:
    """True when `folder` holds a whole entry for `identity`: its artefact and an identical identity.json."""
    return (folder / artefact).is_file() and _identity_of(folder) == identity


def _identity_of(folder: Path) -> dict | None:
    try:
        return json.loads((folder / IDENTITY_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def export_identity(model: ModelIdentity, dtype: torch.dtype, engine: str, engine_version: str,
                    exporter: dict) -> dict:
    """The full identity of one export: what must match for a cached one to be reused."""
    return {"model": model.name, "tiny": model.tiny, "weights": model.weights, "backend": model.backend,
            "config": model.config, "code": model.code, "dtype": dtype_name(dtype), "engine": engine,
            "engine_version": engine_version, "exporter": exporter}
