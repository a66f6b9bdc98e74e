"""Issue 36: reduced precision that can be measured. The accuracy gate against the fp32 function, comparisons that
never die for one side, precision tiers read back from every engine, the CPU named by its units, the allocator.

Tiny models on CPU; nothing asserts a timing or which kernel a measurement picks.
"""

import json
import os
import subprocess
import sys
import types
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from mbbench import allocator, device, engines
from mbbench.batching import pad_documents
from mbbench.cli import cli
from mbbench.engines import EngineInfo, PreparedEngine, onnxruntime_engine, openvino_engine
from mbbench.engines.parity import COSINE_BAR, MAX_REL_ERROR, NOISE_MULTIPLE, References, judge
from mbbench.models import gemm
from mbbench.models.encoders import float32_twin
from mbbench.models.registry import BuildOptions, build_encoder
from mbbench.records import Identity, Record

TINY = ["--tiny", "--device", "cpu", "--threads", "1"]


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def read_all(directory: Path) -> list[Record]:
    return [Record.from_json(json.loads(p.read_text()), str(p)) for p in sorted(directory.rglob("*.json"))]


@pytest.fixture(scope="module", autouse=True)
def engine_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MBBENCH_ENGINE_CACHE", str(tmp_path_factory.mktemp("engine-cache")))
        yield


# ------------------------------------------------------------------------------------- the gate on numbers

@pytest.fixture(scope="module")
def function():
    """An fp32 output (2 documents x 6 tokens x 32 hidden, the second document 4 tokens) and its real mask."""
    generator = torch.Generator().manual_seed(0)
    output = torch.randn(2, 6, 32, generator=generator) * 3  # (batch, seq, hidden)
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2])
    return output, mask


def batch_of(mask):
    return pad_documents([torch.arange(int(n)) + 5 for n in mask.sum(1)], 0)


def rounded(output, scale, seed):
    """`output` plus noise of `scale` x its largest value: a rounding of that size."""
    generator = torch.Generator().manual_seed(seed)
    return output + torch.randn(output.shape, generator=generator) * scale * output.abs().max() / 3


def gate(side, function, torch_side, is_torch=False):
    output, mask = function
    refs = References(output, torch_side, torch.bfloat16)
    return judge("side", side, refs, batch_of(mask), is_torch)


def test_an_engine_closer_to_fp32_than_torch_rounding_passes_though_it_differs_from_torch(function):
    """Issue 36's report: OpenVINO bf16 was 0.0032 from fp32, torch bf16 0.044; the old gate (2e-2 from torch bf16)
    refused OpenVINO. Against the function it passes, and the record keeps both errors and the floor."""
    output, _ = function
    torch_bf16, closer = rounded(output, 0.044, 1), rounded(output, 0.0032, 2)
    result = gate(closer, function, torch_bf16)
    assert result.passed, result.message
    assert result.vs_torch.max_rel_error > 2e-2  # what the old gate judged, and refused
    assert result.vs_float32.max_rel_error < result.noise_floor.max_rel_error
    assert result.tolerance == pytest.approx(min(NOISE_MULTIPLE * result.noise_floor.max_rel_error, MAX_REL_ERROR))
    saved = result.check()  # as the record keeps it
    assert (saved.vs_float32, saved.vs_torch, saved.noise_floor) == (result.vs_float32, result.vs_torch,
                                                                     result.noise_floor)
    assert (saved.tolerance, saved.cosine_bar, saved.error) == (result.tolerance, result.cosine_bar, result.error)
    assert saved.passed and saved.vs_float32.cosine_min >= COSINE_BAR


def test_within_the_noise_multiple_passes_and_beyond_it_fails(function):
    output, _ = function
    torch_bf16 = rounded(output, 0.01, 1)
    floor = gate(torch_bf16, function, torch_bf16, is_torch=True).vs_float32.max_rel_error
    assert gate(rounded(output, 0.012, 3), function, torch_bf16).passed  # another rounding of about its size
    far = gate(rounded(output, 0.03, 4), function, torch_bf16)
    assert far.vs_float32.max_rel_error > NOISE_MULTIPLE * floor and not far.passed and "fails" in far.message


@pytest.mark.parametrize("breakage", ["nan", "inf", "ten-percent", "wrong-layer"])
def test_broken_outputs_always_fail_even_against_a_coarse_floor(function, breakage):
    """NaN, inf, a 1e-1 error and another layer's output fail whatever torch's own rounding (here a floor of 8%)."""
    output, mask = function
    torch_bf16 = rounded(output, 0.08, 1)
    broken = output.clone()
    if breakage == "nan":
        broken[0, 0, 0] = float("nan")
    elif breakage == "inf":
        broken[1, 3, 5] = float("inf")
    elif breakage == "ten-percent":
        broken[0, 2, 7] += MAX_REL_ERROR * output.abs().max()
    else:  # the right scale, another function: a different layer's hidden states
        broken = torch.randn(output.shape, generator=torch.Generator().manual_seed(9)) * 3
    result = gate(broken, function, torch_bf16)
    assert not result.passed, result.message
    with pytest.raises(engines.ParityFailure):
        result.require()


def test_nan_on_padding_is_not_judged(function):
    output, mask = function
    padded_nan = output.clone()
    padded_nan[~mask.bool()] = float("nan")
    assert gate(padded_nan, function, rounded(output, 0.01, 1)).passed


def test_the_torch_side_is_the_floor_and_must_clear_the_cosine_bar(function):
    output, _ = function
    fine = rounded(output, 0.01, 1)
    result = gate(fine, function, fine, is_torch=True)
    assert result.is_floor and result.vs_torch is None and result.passed
    assert result.cosine_bar == COSINE_BAR and result.tolerance == MAX_REL_ERROR
    coarse = rounded(output, 0.09, 1)  # under the hard ceiling but cosine below 0.999
    judged = gate(coarse, function, coarse, is_torch=True)
    assert judged.vs_float32.cosine_min < COSINE_BAR and not judged.passed


def test_fp32_keeps_the_absolute_bar(function):
    output, mask = function
    refs = References(output, output, torch.float32)
    assert judge("e", output + 5e-5, refs, batch_of(mask), False).passed
    off = judge("e", output + 2e-4, refs, batch_of(mask), False)
    assert not off.passed and off.tolerance == 1e-4 and off.cosine_bar is None and off.noise_floor is None


# --------------------------------------------------------------------------------------- the fp32 function

def test_float32_twin_is_the_same_weights_on_torch_kernels_and_leaves_the_model_alone():
    encoder = build_encoder("modernbert-base", BuildOptions(dtype=torch.bfloat16), tiny=True)
    twin = float32_twin(encoder)
    assert twin is not encoder and twin.dtype == torch.float32 and encoder.dtype == torch.bfloat16
    for (name, ours), (_, theirs) in zip(encoder.module.state_dict().items(), twin.module.state_dict().items()):
        assert torch.equal(ours.float(), theirs), name  # an exact upcast
    plain = build_encoder("modernbert-base", BuildOptions(), tiny=True)
    assert float32_twin(plain) is plain  # fp32 on torch's kernels: already the function


@pytest.mark.skipif(not gemm.onednn_available(), reason="oneDNN's packed linear is not available here")
def test_float32_twin_of_a_packed_model_drops_the_opaque_weights():
    encoder = build_encoder("modernbert-base", BuildOptions(gemm=gemm.ONEDNN_PACKED), tiny=True)
    twin = float32_twin(encoder)
    assert twin.gemm == gemm.TORCH and not any(gemm.PACKED in m.__dict__ for m in twin.module.modules())
    assert any(gemm.PACKED in m.__dict__ for m in encoder.module.modules())
    ids, cu_seqlens = torch.randint(5, 500, (40,)), torch.tensor([0, 40], dtype=torch.int32)
    with torch.inference_mode():
        difference = twin.module.forward_packed(ids, cu_seqlens, 40) - encoder.module.forward_packed(ids, cu_seqlens, 40)
    assert difference.abs().max() < 1e-5  # the same function on another GEMM kernel


def test_a_bf16_run_records_its_error_against_fp32_and_the_noise_floor(tmp_path):
    result = invoke("run", *TINY, "--dtype", "bfloat16", "--docs", "2", "--runs", "1", "--out", tmp_path, "--quiet")
    assert result.exit_code == 0, result.output
    (record,) = read_all(tmp_path)
    parity = record.payload.parity
    assert parity.passed and parity.judged_on == "rel" and parity.vs_torch is None  # it is the floor
    assert parity.noise_floor == parity.vs_float32 and 0 < parity.error < MAX_REL_ERROR
    assert parity.vs_float32.cosine_min >= COSINE_BAR


# ------------------------------------------------------------------------------- comparisons never die for one

def broken(monkeypatch, model: str, engine: str):
    real = engines.prepare_engine

    def prepare(chosen, encoder, identity, first_batch, *args, **kwargs):
        prepared = real(chosen, encoder, identity, first_batch, *args, **kwargs)
        if getattr(chosen, "name", chosen) != engine or identity.name != model:  # an Engine (loading) or a name
            return prepared
        return PreparedEngine(lambda batch: prepared(batch) * float("nan"), prepared.info)

    monkeypatch.setattr(engines, "prepare_engine", prepare)


def test_a_failing_baseline_hands_over_to_the_next_side_and_the_rest_is_compared(tmp_path, monkeypatch):
    """The last side is the default baseline: it fails the gate, the first measured side becomes the baseline."""
    broken(monkeypatch, "hf-modernbert-base", "onnxruntime")
    result = invoke("compare", *TINY, "--docs", "2", "--runs", "1", "--model", "modernbert-base", "--model",
                    "bert-base", "--model", "hf-modernbert-base@onnxruntime", "--out", tmp_path)
    assert result.exit_code == 0, result.output
    (record,) = read_all(tmp_path)
    payload = record.payload
    assert record.identity.models == ("modernbert-base", "bert-base", "hf-modernbert-base@onnxruntime")
    assert record.identity.baseline == "hf-modernbert-base@onnxruntime" and payload.baseline == "modernbert-base"
    assert [r.model for r in payload.paired.ratios] == ["bert-base"]
    assert "baseline hf-modernbert-base@onnxruntime was left out" in payload.baseline_note
    assert "modernbert-base is the baseline instead" in result.output
    assert "failed the accuracy gate" in payload.excluded["hf-modernbert-base@onnxruntime"]
    assert Path(record.source_path).name.startswith("modernbert-base-vs-bert-base-vs-hf-modernbert-base-onnxruntime")


def test_a_side_whose_preparation_raises_any_error_is_left_out(tmp_path, monkeypatch):
    real = engines.prepare_engine

    def prepare(chosen, *args, **kwargs):
        if getattr(chosen, "name", chosen) == "openvino":
            raise RuntimeError("Exception from src/inference/src/cpp/core.cpp: compile failed")
        return real(chosen, *args, **kwargs)

    monkeypatch.setattr(engines, "prepare_engine", prepare)
    result = invoke("compare", *TINY, "--docs", "2", "--runs", "1", "--model", "hf-modernbert-base", "--model",
                    "hf-modernbert-base@openvino", "--model", "bert-base", "--out", tmp_path)
    assert result.exit_code == 0, result.output
    (record,) = read_all(tmp_path)
    assert record.payload.excluded == {
        "hf-modernbert-base@openvino": "cannot run here: RuntimeError: Exception from src/inference/src/cpp/core.cpp: "
                                       "compile failed"}


def test_onnxruntime_in_bf16_is_left_out_naming_bf16_and_the_others_compared(tmp_path):
    """The issue's check, tiny: a bf16 comparison with an ONNX Runtime side."""
    result = invoke("compare", *TINY, "--dtype", "bfloat16", "--docs", "2", "--runs", "1", "--model",
                    "modernbert-base", "--model", "hf-modernbert-base", "--model", "hf-modernbert-base@onnxruntime",
                    "--out", tmp_path)
    assert result.exit_code == 0, result.output
    (record,) = read_all(tmp_path)
    payload = record.payload
    assert payload.baseline == "modernbert-base"  # the asked-for baseline (the last side) could not run
    reason = payload.excluded["hf-modernbert-base@onnxruntime"]
    assert "bfloat16" in reason and len(reason.splitlines()) == 1
    assert [r.model for r in payload.paired.ratios] == ["hf-modernbert-base"]
    for side in ("modernbert-base", "hf-modernbert-base"):  # each side judged against its own fp32 function
        assert payload.parity[side].passed and payload.parity[side].dtype == "bfloat16"
    assert "tier bfloat16" in result.output


def test_comparison_keys_do_not_depend_on_the_order_and_old_records_keep_theirs():
    base = dict(measurement="comparison", model="b", suite="s", suite_fingerprint="f", protocol="rigorous",
                dtype="float32", device="cpu")
    old = Identity(**base, models=("b", "a", "c"), backend="sdpa,auto,eager", engine="torch,onnxruntime,torch")
    given = Identity(**base, models=("a", "b", "c"), baseline="b", backend="auto,sdpa,eager",
                     engine="onnxruntime,torch,torch")
    assert given.key() == old.key() and given.baseline_side == old.baseline_side == "b"
    assert given.file_stem().startswith("a-vs-b-vs-c")
    assert Identity(**base, models=("a", "b", "c"), baseline="a", backend="auto,sdpa,eager",
                    engine="onnxruntime,torch,torch").key() != old.key()  # another baseline, another ratio


# ---------------------------------------------------------------------------------------- precision tiers

def info(precision: str, note: str = "") -> EngineInfo:
    return EngineInfo("e", "1", "cpu", "test", 1, 1, "none", precision=precision, precision_note=note)


def test_an_engine_computing_another_precision_is_refused_as_another_tier():
    engines.check_precision(info("bfloat16"), torch.bfloat16)
    with pytest.raises(engines.EngineUnavailable, match="computes in float32, not bfloat16: not a bfloat16 tier"):
        engines.check_precision(info("float32"), torch.bfloat16)
    with pytest.raises(engines.EngineUnavailable, match="mixed, not float16 \\(ONNX Runtime inserted 38 casts"):
        engines.check_precision(info("mixed", "ONNX Runtime inserted 38 casts to run float16 operators on float32 "
                                              "kernels"), torch.float16)


@pytest.mark.parametrize("capabilities, refused", [(["FP32", "INT8", "BIN", "EXPORT_IMPORT"], True),
                                                   (["FP32", "BF16", "FP16", "INT8"], False)], ids=["avx2", "amx"])
def test_openvino_refuses_bf16_on_a_cpu_without_bf16_units(monkeypatch, capabilities, refused):
    """What OPTIMIZATION_CAPABILITIES says decides: this AMD EPYC lists FP32 only, and OpenVINO then reads back f32
    for a bf16 hint; an AMX Xeon lists BF16."""
    core = types.SimpleNamespace(get_property=lambda device_, name: capabilities)
    monkeypatch.setattr(openvino_engine, "_openvino", lambda: types.SimpleNamespace(Core=lambda: core))
    reason = engines.get_engine("openvino").precision_refusal(torch.bfloat16)
    assert (reason is not None) == refused
    if refused:
        assert "no BF16 on this CPU" in reason and "compute bfloat16 in f32" in reason
    assert engines.get_engine("openvino").precision_refusal(torch.float32) is None


def test_onnxruntime_fp16_on_a_cpu_refuses_what_its_provider_cannot_load(tmp_path):
    """ModernBERT's fp16 export binds LayerNormalization to fp32 and fp16: the CPU provider cannot load it."""
    encoder = build_encoder("hf-modernbert-base", BuildOptions(dtype=torch.float16), tiny=True)
    batch = pad_documents([torch.arange(5, 30)], encoder.pad_token_id)
    identity = engines.model_identity("hf-modernbert-base", encoder, tiny=True)
    with pytest.raises(engines.EngineUnavailable, match="cannot load the float16 export: .*LayerNormalization"):
        engines.prepare_engine("onnxruntime", encoder, identity, batch, threads=1, cache_dir=tmp_path)


def test_inserted_casts_make_the_precision_mixed(tmp_path):
    """DeBERTa-v3's fp16 export runs on the CPU provider only through casts it inserts (26 -> 64 counted)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    def graph_with(casts: int, path: Path) -> Path:
        nodes = [helper.make_node("Cast", [f"x{i}"], [f"x{i + 1}"], to=TensorProto.FLOAT) for i in range(casts)]
        graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x0", TensorProto.FLOAT, [1])],
                                  [helper.make_tensor_value_info(f"x{casts}", TensorProto.FLOAT, [1])])
        onnx.save(helper.make_model(graph), str(path))
        return path

    exported, optimized = graph_with(26, tmp_path / "a.onnx"), graph_with(64, tmp_path / "b.onnx")
    assert onnxruntime_engine.precision_of(exported, optimized, torch.float16) == {
        "precision": "mixed", "precision_note": "ONNX Runtime inserted 38 casts to run float16 operators on "
                                                "float32 kernels"}
    assert onnxruntime_engine.precision_of(exported, exported, torch.float16) == {"precision": "float16"}
    assert onnxruntime_engine.precision_of(optimized, exported, torch.float32) == {"precision": "float32"}


# ------------------------------------------------------------------------------ the CPU named by its units

SAPPHIRE_RAPIDS = "flags\t\t: fpu sse2 avx avx2 avx512f avx512bw avx512_bf16 avx512_fp16 amx_bf16 amx_tile amx_int8\n"
XEON_WITHOUT_AMX = "flags\t\t: fpu sse2 avx avx2 avx512f avx512bw avx512_vnni\n"


def test_two_xeons_with_and_without_amx_are_two_devices(monkeypatch):
    monkeypatch.setattr(device, "cpu_name", lambda: "Intel(R) Xeon(R) Processor")
    amx, plain = device.cpu_device(SAPPHIRE_RAPIDS), device.cpu_device(XEON_WITHOUT_AMX)
    assert amx.name == plain.name == "Intel(R) Xeon(R) Processor"
    assert amx.isa == "amx-bf16 avx512-bf16 avx512-fp16 avx512 avx2" and plain.isa == "avx512 avx2"
    assert amx.label == "Intel(R) Xeon(R) Processor [amx-bf16 avx512-bf16 avx512-fp16 avx512 avx2]"
    base = dict(measurement="throughput", model="m", suite="s", suite_fingerprint="f", protocol="rigorous",
                backend="auto", dtype="bfloat16", device=amx.identity_name, threads=2)
    with_amx, without = Identity(**base, cpu_isa=amx.isa), Identity(**base, cpu_isa=plain.isa)
    assert with_amx.key() != without.key()
    assert with_amx.configuration_key() == without.configuration_key()  # a matrix plans before placement
    assert Identity(**base).key() != with_amx.key()  # records before issue 36 said nothing: never merged with them


def test_a_cpu_run_records_its_units_and_the_allocator(tmp_path):
    result = invoke("run", *TINY, "--docs", "1", "--runs", "1", "--out", tmp_path, "--quiet")
    assert result.exit_code == 0, result.output
    (record,) = read_all(tmp_path)
    flags = device.cpu_flags()
    assert record.identity.cpu_isa == record.device.isa == (device.cpu_isa(flags) if flags else None)
    assert record.device.cpu_capability == torch.backends.cpu.get_cpu_capability()
    assert record.environment["allocator"] == allocator.current().describe()


# --------------------------------------------------------------------------------------------- the allocator

FAULTS = """
import resource, torch
from mbbench import allocator
print(allocator.configure().name)
x = torch.randn(4096, 256)
w = torch.randn(4096, 256)
for _ in range(20):  # warmup: the heap grows until freed outputs are reused (about ten calls)
    torch.nn.functional.linear(x, w)  # a 64 MiB fp32 output: above glibc's 32 MiB mmap threshold
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    torch.nn.functional.linear(x, w)
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // 5)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_the_large_heap_setting_stops_page_faults_on_every_large_output():
    """Page faults per call, counted (not timed): the default glibc setting maps and unmaps a 64 MiB output on every
    call and faults all of it in again; the large heap reuses it once warm."""
    def faults(setting: str) -> tuple[str, int]:
        env = {**os.environ, allocator.ENVIRONMENT_VARIABLE: setting, "OMP_NUM_THREADS": "1"}
        env.pop("LD_PRELOAD", None)
        done = subprocess.run([sys.executable, "-c", FAULTS], capture_output=True, text=True, env=env, timeout=120,
                              cwd=Path(__file__).resolve().parents[1])
        name, count = done.stdout.split()
        return name, int(count)

    system, large = faults("system"), faults("large-heap")
    assert system[0] == "system" and large[0] == "large-heap"
    assert system[1] >= 16_000  # 64 MiB / 4 KiB pages = 16,384 faults per call
    assert large[1] < 100


def test_an_unknown_allocator_setting_is_refused(monkeypatch):
    monkeypatch.setenv(allocator.ENVIRONMENT_VARIABLE, "tcmalloc-please")
    with pytest.raises(ValueError, match="choose from large-heap, system"):
        allocator.requested()


def test_the_allocator_a_cpu_run_measured_with_is_part_of_its_identity(tmp_path, monkeypatch):
    """The fresh-clone trial: a `MBBENCH_ALLOCATOR=system` rerun reused a large-heap record ("ok (skipped)")."""
    from mbbench.plan import RunConfig, resolve

    config = RunConfig(model="modernbert-base", suite="short-variable", device="cpu", tiny=True, docs=2)
    plan = resolve(config)
    assert plan.identity.allocator == allocator.current().name
    other = replace(plan.identity, allocator="system" if plan.identity.allocator != "system" else "large-heap")
    assert other.key() != plan.identity.key()
    assert replace(plan.identity, allocator=None).key() != plan.identity.key()  # runs before issue 36: glibc as found


def test_an_mfu_above_one_is_a_warning_that_says_why():
    from mbbench.commands.console import warnings_of

    [committed] = sorted((Path(__file__).resolve().parents[1] / "results" / "cpu").glob("*__comparison__*.json"))[:1]
    record = Record.from_json(json.loads(committed.read_text()))
    high = replace(record, payload=replace(record.payload, mfu={"modernbert-base-tiny": 1.65, "bert-base": 0.4}))
    [warning] = [w for w in warnings_of(high) if w.startswith("MFU above 1")]
    assert "(modernbert-base-tiny 1.65)" in warning and "0.40" not in warning and "measured low" in warning
