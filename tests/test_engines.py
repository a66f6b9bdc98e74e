"""Engines (torch, torch-compile, onnxruntime, openvino): export, parity on real tokens, cache, threads, refusals.

Tiny models only; every export goes to one module-scoped cache folder. No test asserts a timing.
"""

import builtins
import os
import types

import pytest
import torch

import mbbench.engines as engines
from mbbench.batching import pack_documents, pad_documents
from mbbench.engines import cache as engine_cache
from mbbench.engines import onnxruntime_engine
from mbbench.engines.base import EngineInfo, PreparedEngine
from mbbench.engines.openvino_engine import OpenVinoEngine
from mbbench.errors import UserError
from mbbench.models.encoders import HFPaddedEncoder
from mbbench.models.registry import BuildOptions, build_encoder

THREADS = 1  # below this machine's default, so a value read back proves it was applied
# Padded rows run 180 tokens past the shortest document: more than ModernBERT's 64-token half-window, so some
# padding queries see no key at all in sliding layers (the case that turns OpenVINO's SDPA NaN).
LENGTHS = (200, 20, 150)


def parity_of(engine, torch_engine, batch, dtype=torch.float32, float32=None):
    """The accuracy gate of `engine` against `torch_engine` in `dtype` (its fp32 twin `float32`; None in fp32)."""
    refs = engines.references(torch_engine, batch, dtype, float32)
    return engines.check_parity(engine, refs, batch, is_torch_engine=engine is torch_engine)


def documents(lengths=LENGTHS, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(5, 1000, (n,), generator=generator) for n in lengths]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("engine-cache")


@pytest.fixture(scope="module")
def modernbert():
    encoder = build_encoder("hf-modernbert-base", BuildOptions(), tiny=True)
    return encoder, engines.model_identity("hf-modernbert-base", encoder, tiny=True)


@pytest.fixture(scope="module")
def batch(modernbert):
    padded = pad_documents(documents(), modernbert[0].pad_token_id)
    assert padded.real_tokens < padded.padded_tokens  # the batch holds padding
    return padded


@pytest.fixture(scope="module")
def reference(modernbert, batch, cache_dir):
    encoder, identity = modernbert
    return engines.prepare_engine("torch", encoder, identity, batch, threads=THREADS, cache_dir=cache_dir)


@pytest.fixture(scope="module")
def onnxruntime_prepared(modernbert, batch, cache_dir):
    encoder, identity = modernbert
    return engines.prepare_engine("onnxruntime", encoder, identity, batch, threads=THREADS, cache_dir=cache_dir)


# ------------------------------------------------------------------------------------------------- parity

def test_onnxruntime_matches_torch_on_a_padded_batch(onnxruntime_prepared, reference, batch):
    parity = parity_of(onnxruntime_prepared, reference, batch)
    assert parity.passed, parity.message
    assert parity.judged_on == "abs" and parity.tolerance == 1e-4
    assert parity.real_tokens == sum(LENGTHS) and parity.vs_float32.non_finite == 0
    assert parity.vs_float32.max_abs_error < 1e-5  # 5e-7 measured: far inside the bar
    assert parity.noise_floor is None and parity.cosine_bar is None  # fp32: the absolute bar only
    info = onnxruntime_prepared.info
    assert (info.provider, info.graph_optimization, info.precision) == ("CPUExecutionProvider", "ORT_ENABLE_ALL",
                                                                        "float32")
    assert info.fused_ops.get("FusedMatMul", 0) > 0  # counted in the saved optimised graph
    assert info.export_seconds > 0 and info.compile_seconds > 0 and info.first_call_seconds > 0


def test_onnxruntime_exports_bert_too(cache_dir):
    encoder = build_encoder("bert-base", BuildOptions(), tiny=True)
    padded = pad_documents(documents((40, 9)), encoder.pad_token_id)
    identity = engines.model_identity("bert-base", encoder, tiny=True)
    prepared = engines.prepare_engine("onnxruntime", encoder, identity, padded, threads=THREADS, cache_dir=cache_dir)
    torch_engine = engines.prepare_engine("torch", encoder, identity, padded, threads=THREADS)
    other = pad_documents(documents((7, 31, 12), seed=1), encoder.pad_token_id)  # another batch and sequence size
    assert parity_of(prepared, torch_engine, other).passed


def test_openvino_through_onnx_matches_torch(modernbert, batch, reference, cache_dir):
    encoder, identity = modernbert
    prepared = engines.prepare_engine("openvino", encoder, identity, batch, threads=THREADS, cache_dir=cache_dir)
    parity = parity_of(prepared, reference, batch)
    assert parity.passed, parity.message
    # fp32 asked for and read back: on bf16-capable CPUs OpenVINO would otherwise compute in bf16
    assert prepared.info.precision == "float32" and prepared.info.settings["source"] == "onnx"
    assert prepared.info.fused_ops.get("MVN", 0) > 0  # LayerNorm fused by the CPU plugin


@pytest.fixture(scope="module")
def four_layer_modernbert():
    """transformers' ModernBertModel (sdpa) deep enough for a NaN on padding to reach real tokens (layer 1 is
    the first sliding one; layer 2 attends to its NaN rows)."""
    from transformers import ModernBertConfig, ModernBertModel

    config = ModernBertConfig(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=128,
                              vocab_size=1024, pad_token_id=0, bos_token_id=None, eos_token_id=None,
                              cls_token_id=None, sep_token_id=None, attn_implementation="sdpa")
    torch.manual_seed(0)
    encoder = HFPaddedEncoder(ModernBertModel(config).eval(), "sdpa")
    return encoder, engines.model_identity("test-modernbert-4-layers", encoder)


def test_openvino_from_the_torch_module_is_nan_on_padded_batches_and_parity_says_so(four_layer_modernbert,
                                                                                       batch, cache_dir):
    encoder, identity = four_layer_modernbert
    torch_engine = engines.prepare_engine("torch", encoder, identity, batch, threads=THREADS)
    direct = engines.prepare_engine(OpenVinoEngine(source="torch"), encoder, identity, batch, threads=THREADS,
                                    cache_dir=cache_dir)
    parity = parity_of(direct, torch_engine, batch)
    assert not parity.passed and parity.vs_float32.non_finite > 0
    assert "NaN/inf" in parity.message and parity.message.endswith("fails")
    with pytest.raises(engines.ParityFailure, match="NaN"):
        parity.require()
    unpadded = pad_documents(documents((200,)), encoder.pad_token_id)  # no padding: the direct path is right
    assert parity_of(direct, torch_engine, unpadded).passed
    through_onnx = engines.prepare_engine("openvino", encoder, identity, batch, threads=THREADS, cache_dir=cache_dir)
    assert parity_of(through_onnx, torch_engine, batch).passed  # the fix


def _perturbed(reference: PreparedEngine, change) -> PreparedEngine:
    info = EngineInfo("broken", "0", "cpu", "test", 1, 1, "none")
    return PreparedEngine(lambda b: change(reference(b).clone(), b), info)


def _nan_on_first_token(out, batch):
    out[0, 0, 0] = float("nan")
    return out


def _nan_on_padding_only(out, batch):
    out[~batch.attention_mask.bool()] = float("nan")
    return out


def test_broken_engine_outputs_fail_parity_with_error_and_tolerance(reference, batch):
    nan = parity_of(_perturbed(reference, _nan_on_first_token), reference, batch)
    assert not nan.passed and nan.vs_float32.non_finite == 1 and nan.tolerance == 1e-4
    assert "1 NaN/inf" in nan.message and nan.message.endswith("fails")

    off = parity_of(_perturbed(reference, lambda out, b: out + 1e-2), reference, batch)
    assert not off.passed and off.vs_float32.non_finite == 0
    assert off.vs_float32.max_abs_error == pytest.approx(1e-2, rel=1e-3)
    assert "error 0.01" in off.message and "bar 0.0001" in off.message
    with pytest.raises(engines.ParityFailure) as failure:
        off.require()
    assert failure.value.result is off

    # what engines leave on padding is not compared
    assert parity_of(_perturbed(reference, _nan_on_padding_only), reference, batch).passed


def test_packed_batches_compare_every_token():
    encoder = build_encoder("modernbert-base", BuildOptions(), tiny=True)
    packed = pack_documents(documents((30, 12)))
    torch_engine = engines.prepare_engine("torch", encoder, engines.model_identity("modernbert-base", encoder, True),
                                          packed, threads=THREADS)
    parity = parity_of(torch_engine, torch_engine, packed)
    assert parity.passed and parity.real_tokens == 42 and parity.vs_float32.max_abs_error == 0.0


@pytest.mark.slow
def test_torch_compile_matches_eager():
    encoder = build_encoder("bert-base", BuildOptions(), tiny=True)
    padded = pad_documents(documents((24, 9)), encoder.pad_token_id)
    identity = engines.model_identity("bert-base", encoder, tiny=True)
    compiled = engines.prepare_engine("torch-compile", encoder, identity, padded, threads=THREADS)
    eager = engines.prepare_engine("torch", encoder, identity, padded, threads=THREADS)
    assert parity_of(compiled, eager, padded).passed
    assert compiled.info.graph_optimization == "inductor (freezing=True)" and compiled.info.compile_seconds is None


# -------------------------------------------------------------------------------------------------- cache

def test_second_prepare_reuses_the_export(modernbert, batch, cache_dir, onnxruntime_prepared, monkeypatch):
    encoder, identity = modernbert
    exports = []
    real_export = onnxruntime_engine.export_onnx
    monkeypatch.setattr(onnxruntime_engine, "export_onnx", lambda *a, **k: exports.append(1) or real_export(*a, **k))
    model_file = f"{onnxruntime_prepared.info.cache_path}/model.onnx"
    mtime = os.path.getmtime(model_file)

    again = engines.prepare_engine("onnxruntime", encoder, identity, batch, threads=THREADS, cache_dir=cache_dir)
    assert exports == [] and again.info.cache_hit and again.info.export_seconds == 0.0
    assert again.info.cache_path == onnxruntime_prepared.info.cache_path
    assert os.path.getmtime(model_file) == mtime

    reseeded = build_encoder("hf-modernbert-base", BuildOptions(seed=1), tiny=True)
    other = engines.model_identity("hf-modernbert-base", reseeded, tiny=True)
    assert other.weights != identity.weights
    fresh = engines.prepare_engine("onnxruntime", reseeded, other, batch, threads=THREADS, cache_dir=cache_dir)
    assert exports == [1] and fresh.info.cache_hit is False and fresh.info.cache_path != again.info.cache_path


def test_cache_identity_separates_dtype_engine_version_and_exporter(tmp_path):
    identity = engines.ModelIdentity("m", True, "abc")
    base = engine_cache.export_identity(identity, torch.float32, "onnxruntime", "1.0", {"opset": 17})
    variants = [engine_cache.export_identity(identity, torch.float16, "onnxruntime", "1.0", {"opset": 17}),
                engine_cache.export_identity(identity, torch.float32, "onnxruntime", "1.1", {"opset": 17}),
                engine_cache.export_identity(identity, torch.float32, "openvino", "1.0", {"opset": 17}),
                engine_cache.export_identity(identity, torch.float32, "onnxruntime", "1.0", {"opset": 18})]
    exports = []

    def export(folder):
        exports.append(folder)
        (folder / "model.onnx").write_bytes(b"graph")

    assert not engine_cache.cached_export(tmp_path, base, "model.onnx", export).hit
    assert engine_cache.cached_export(tmp_path, base, "model.onnx", export).hit
    assert not any(engine_cache.cached_export(tmp_path, v, "model.onnx", export).hit for v in variants)
    assert len(exports) == 5


def test_failed_export_leaves_no_entry(tmp_path):
    def broken(folder):
        (folder / "model.onnx").write_bytes(b"half")
        raise RuntimeError("exporter failed")

    with pytest.raises(RuntimeError):
        engine_cache.cached_export(tmp_path, {"model": "m"}, "model.onnx", broken)
    assert list(tmp_path.iterdir()) == []


def test_two_runs_exporting_the_same_entry_at_once_both_use_it(tmp_path):
    """Two runs sharing a cache: the other one's entry lands while ours exports; ours must not fail or delete it."""
    identity = {"model": "m", "engine": "onnxruntime"}

    def theirs(folder):
        (folder / "model.onnx").write_bytes(b"theirs")

    def ours(folder):
        (folder / "model.onnx").write_bytes(b"ours")
        engine_cache.cached_export(tmp_path, identity, "model.onnx", theirs)  # the other run finishes first

    entry = engine_cache.cached_export(tmp_path, identity, "model.onnx", ours)
    assert not entry.hit and (entry.path / "model.onnx").read_bytes() == b"theirs"
    assert [p.name for p in tmp_path.iterdir()] == [entry.path.name]  # our staging folder is gone
    stale = {"model": "m", "engine": "onnxruntime", "opset": 18}
    engine_cache.cached_export(tmp_path, stale, "model.onnx", theirs)
    folder = next(p for p in tmp_path.iterdir() if p.name != entry.path.name)
    (folder / "identity.json").write_text("{}")  # a partial entry under the key is replaced, not taken
    assert not engine_cache.cached_export(tmp_path, stale, "model.onnx", ours).hit
    assert (folder / "model.onnx").read_bytes() == b"ours"


# ------------------------------------------------------------------------------------------------ threads

def test_threads_are_applied_and_read_back(onnxruntime_prepared, reference, modernbert, batch, cache_dir):
    assert (onnxruntime_prepared.info.threads_intra, onnxruntime_prepared.info.threads_inter) == (THREADS, 1)
    assert reference.info.threads_intra == THREADS
    openvino = engines.prepare_engine("openvino", *modernbert, batch, threads=THREADS, cache_dir=cache_dir)
    assert openvino.info.settings["INFERENCE_NUM_THREADS"] == str(THREADS)
    assert (openvino.info.threads_intra, openvino.info.threads_inter) == (THREADS, 1)


def test_threads_default_to_torch_and_refuse_nonsense():
    assert engines.threads_from(None) == engines.Threads(torch.get_num_threads(), 1)
    with pytest.raises(UserError, match="positive integer"):
        engines.threads_from(0)


# ----------------------------------------------------------------------------------------------- refusals

def _without(monkeypatch, *packages):
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.split(".")[0] in packages:
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)


@pytest.mark.parametrize("engine, package, extra", [("openvino", "openvino", "mbbench[openvino]"),
                                                     ("onnxruntime", "onnxruntime", "mbbench[onnx]")])
def test_missing_extra_is_a_one_line_user_error(monkeypatch, modernbert, batch, engine, package, extra):
    _without(monkeypatch, package)
    with pytest.raises(UserError, match=extra.replace("[", r"\[").replace("]", r"\]")) as error:
        engines.prepare_engine(engine, *modernbert, batch)
    assert "\n" not in str(error.value)
    row = {r.name: r for r in engines.available_engines()}[engine]
    assert not row.installed and row.version is None and extra in row.reason


def test_packed_model_is_refused_with_the_reason(batch):
    encoder = build_encoder("modernbert-base", BuildOptions(), tiny=True)
    identity = engines.ModelIdentity("modernbert-base", True, "x")
    for name in ("onnxruntime", "openvino"):
        with pytest.raises(engines.EngineUnavailable, match="runs packed.*cu_seqlens.*hf-modernbert-base"):
            engines.prepare_engine(name, encoder, identity, batch)


def test_onnxruntime_on_cuda_without_the_cuda_provider_is_refused(monkeypatch):
    import onnxruntime

    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    on_cuda = types.SimpleNamespace(layout="padded", device=torch.device("cuda", 0), dtype=torch.float32)
    with pytest.raises(engines.EngineUnavailable, match="CUDAExecutionProvider.*No CPU fallback"):
        engines.get_engine("onnxruntime").check(on_cuda)
    with_cuda = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: with_cuda)
    engines.get_engine("onnxruntime").check(on_cuda)  # a CUDA build is taken
    with pytest.raises(engines.EngineUnavailable, match="CPU only"):
        engines.get_engine("openvino").check(on_cuda)


def test_engine_names_and_versions():
    assert list(engines.ENGINES) == ["torch", "torch-compile", "torch-compile-max-autotune", "onnxruntime", "openvino"]
    rows = {row.name: row for row in engines.available_engines()}
    assert rows["torch"].installed and rows["torch"].version == torch.__version__
    with pytest.raises(UserError, match="unknown engine 'tensorrt'; choose from torch, torch-compile"):
        engines.get_engine("tensorrt")


# ------------------------------------------------------------------------------ what the export cache keys on

def export_key(encoder, name="hf-modernbert-base"):
    identity = engines.model_identity(name, encoder, tiny=True)
    return engine_cache.export_identity(identity, encoder.dtype, "onnxruntime", "1", {"opset": 17})


def test_the_export_cache_key_holds_the_backend_and_the_whole_config():
    """Issue 34 item 10: `--backend sdpa` after `--backend eager` reused the eager export (3,053 vs 3,575 nodes), and
    a checkpoint with another RoPE theta reused a stale graph. Same weights, another backend or config field: another
    entry."""
    sdpa = build_encoder("hf-modernbert-base", BuildOptions(backend="sdpa"), tiny=True)
    eager = build_encoder("hf-modernbert-base", BuildOptions(backend="eager"), tiny=True)
    assert engines.model_identity("m", sdpa).weights == engines.model_identity("m", eager).weights
    assert export_key(sdpa) != export_key(eager) and export_key(sdpa)["backend"] == "sdpa"
    theta = build_encoder("hf-modernbert-base", BuildOptions(backend="sdpa"), tiny=True)
    theta.module.config.global_rope_theta = 10_000.0  # no tensor changes; the traced constants do
    assert export_key(theta) != export_key(sdpa) and export_key(theta)["weights"] == export_key(sdpa)["weights"]
    assert export_key(build_encoder("hf-modernbert-base", BuildOptions(backend="sdpa"), tiny=True)) == export_key(sdpa)


def test_the_export_cache_key_holds_the_traced_code_and_library_versions(monkeypatch):
    """Issue 34 item 11: a transformers upgrade reused the old export and passed parity against itself."""
    encoder = build_encoder("hf-modernbert-base", BuildOptions(), tiny=True)
    before = export_key(encoder)
    monkeypatch.setattr(engine_cache.metadata, "version", lambda package: "99.0")
    assert export_key(encoder)["code"] != before["code"]
