import json
import math
import statistics

import pytest
from click.testing import CliRunner

from mbbench import predict
from mbbench.cli import cli
from mbbench.errors import UserError
from mbbench.hardware import memory, perfmodel, software, workload
from mbbench.hardware.gpus import basket, lookup, match_device_name
from mbbench.hardware.shape import Shape
from mbbench.models.registry import MODELS
from mbbench import calibration as fits
from mbbench.calibration import calibrate, calibration_rows, default_calibration
from mbbench.hardware.shape import Shape
from mbbench.models.registry import shape_of
from mbbench.validation import leave_one_gpu_out


def test_wave_and_tile_quantization_hand_computed():
    assert perfmodel.waves(109, 108) == 2 and perfmodel.waves(108, 108) == 1
    a100 = lookup("A100-SXM4-80GB")
    per_sm = 312e12 / 108
    t256 = perfmodel.gemm(8192, 256, 4096, a100, "float16")
    t384 = perfmodel.gemm(8192, 384, 4096, a100, "float16")
    # 256x128 tiles: 32x2 = 64 and 32x3 = 96 tiles, both one wave on 108 SMs: the same time
    assert (t256.tile, t256.tiles, t256.waves) == ((256, 128), 64, 1)
    assert (t384.tile, t384.tiles, t384.waves) == ((256, 128), 96, 1)
    # a tile pays its fixed cost as K_OVERHEAD = 128 elements of K: 4096 + 128
    one_wave = 2 * 256 * 128 * (4096 + 128) / per_sm + perfmodel.LAUNCH_SECONDS
    assert t256.seconds == pytest.approx(one_wave) and t384.seconds == pytest.approx(one_wave)
    # 416 tiles -> 4 waves, 448 tiles -> 5 waves: the staircase
    assert perfmodel.gemm(8192, 1664, 4096, a100, "float16").waves == 4
    assert perfmodel.gemm(8192, 1792, 4096, a100, "float16").seconds == pytest.approx(
        5 * 2 * 256 * 128 * (4096 + 128) / per_sm + perfmodel.LAUNCH_SECONDS)
    # N = 257 is unaligned (half-rate tensor-core path): slower than padding it to 384
    assert perfmodel.gemm(8192, 257, 4096, a100, "float16").seconds > t384.seconds


def test_a_shallow_gemm_pays_more_per_flop():
    """The tile's fixed cost (K_OVERHEAD = 128): one wave at K = 768 costs (768 + 128) / 768 of its FLOPs' time, at
    K = 4096 (4096 + 128) / 4096; per FLOP the K = 768 GEMM is 896/768 · 4096/4224 = 1.131x slower."""
    a100 = lookup("A100-SXM4-80GB")
    shallow, deep = perfmodel.gemm(8192, 256, 768, a100, "float16"), perfmodel.gemm(8192, 256, 4096, a100, "float16")
    per_flop = [(e.seconds - perfmodel.LAUNCH_SECONDS) / e.flops for e in (shallow, deep)]
    assert per_flop[0] / per_flop[1] == pytest.approx(896 / 768 * 4096 / 4224)


def test_eager_score_gemms_run_tf32_where_the_stack_enables_it():
    """BERT-large eager attention in fp32 weights: under PYTORCH_TF32 the QKᵀ and PV batched GEMMs run at the TF32
    rate (156 TFLOPS on the A100) instead of SIMT fp32 (19.5): then they are bound by writing and reading the fp32
    scores (no compute-bound seconds left), and attention takes under half its SIMT time."""
    a100, shape = lookup("A100-SXM4-80GB"), Shape(1024, 4096, False, 16, 24, 30522, unpadded=False)
    impl = software.AttentionImpl("eager", "eager", False, "float32", mask=True)
    simt = perfmodel.attention_seconds(shape, [384] * 8, 384, a100, "float32", impl, software.PYTORCH)
    tf32 = perfmodel.attention_seconds(shape, [384] * 8, 384, a100, "float32", impl, software.PYTORCH_TF32)
    assert simt[0] > 0 and tf32[0] == 0 and tf32[1] > simt[1] and sum(tf32) < sum(simt) / 2


def test_mfu_counts_each_part_at_its_own_peak():
    """ModernBERT-base in fp32 on the H100 with varlen attention computing in bf16: MFU is the FLOPs' time at their
    own peaks (GEMMs at fp32's 66.9 TFLOPS, attention at bf16's 989) over the predicted time, so it stays below 1;
    dividing every FLOP by the fp32 peak would read above it."""
    h100 = lookup("H100-SXM")
    shape = Shape(768, 1152, True, 12, 22, 50368, window=64, global_every=3)
    impl = software.resolve_attention("varlen", "float32", h100)
    lengths = [512] * 64
    p = perfmodel.predict(shape, lengths, h100, "float32", None, perfmodel.Calibration({"H100-SXM": 0.95}), impl)
    attention = sum(perfmodel.attention_flops(shape, lengths, None, layer) for layer in range(shape.layers))
    expected = (p.flops - attention) / 66.9e12 + attention / 989.4e12
    assert p.attention_dtype == "bfloat16" and p.peak_seconds == pytest.approx(expected)
    assert p.mfu == pytest.approx(expected / p.seconds) and p.mfu < 1


def test_duplicate_gpu_names_are_predicted_once():
    assert predict.distinct_gpus(["h100", "H100-SXM", "t4", "h100-sxm5"]) == ("H100-SXM", "T4")
    with pytest.raises(UserError):
        predict.distinct_gpus(["h100", "nope"])


def test_tile_count_staircase():
    a100 = lookup("A100-SXM4-80GB")
    e = perfmodel.gemm(16384, 2304, 768, a100)
    assert e.tiles == math.ceil(16384 / e.tile[0]) * math.ceil(2304 / e.tile[1])
    assert 0 < e.wave_efficiency <= 1 and 0 < e.tile_efficiency <= 1


def test_peaks_per_compute_dtype_and_refused_dtypes():
    rtx = lookup("4090")
    assert rtx.peak_tflops("bfloat16") == pytest.approx(165.2)  # fp32-accumulate half rate
    assert lookup("RTX 4090").fp16_fp16acc_tflops == pytest.approx(330.3)
    assert perfmodel.peak_flops(rtx, "float32") == pytest.approx(82.6e12)  # SIMT fp32
    assert perfmodel.peak_flops(lookup("A100-SXM4-80GB"), "tfloat32") == pytest.approx(156e12)
    assert perfmodel.gemm_dtype("float32", software.PYTORCH) == "float32"
    assert perfmodel.gemm_dtype("float32", software.PYTORCH_TF32) == "tfloat32"
    t4 = lookup("t4")
    assert t4.bf16_tflops is None
    shape = shape_of(MODELS["modernbert-base"])
    with pytest.raises(UserError, match="no bf16"):  # refused when a plan resolves it, before any cost
        software.check_dtype(t4, "bf16")
    with pytest.raises(UserError, match="no bf16"):
        software.resolve_attention("sdpa", "bf16", t4)
    with pytest.raises(UserError, match="sm80"):
        software.resolve_attention("varlen", "float16", t4)
    with pytest.raises(UserError, match="TF32"):
        perfmodel.peak_flops(t4, "tfloat32")
    assert perfmodel.predict(shape, [512] * 32, t4, "float16", None, default_calibration()).dtype == "float16"


def test_aliases_and_detection_names():
    assert lookup("rtx4090").id == lookup("4090").id == "RTX4090"
    assert match_device_name("NVIDIA H100 80GB HBM3").id == "H100-SXM"
    assert match_device_name("NVIDIA H200").id == "H200-SXM"
    assert match_device_name("NVIDIA GeForce RTX 4090").id == "RTX4090"
    assert match_device_name("Some Future GPU") is None
    assert {"T4", "A10", "L4", "RTX3090", "RTX4090", "A100-SXM4-40GB", "A100-PCIe-80GB", "H100-SXM", "H100-PCIe",
            "H200-SXM", "L40S", "RTX6000Ada", "B200"} <= set(basket())


def test_sdpa_kernel_choice_follows_dtype_mask_and_arch():
    a100, h100, t4 = lookup("A100-SXM4-80GB"), lookup("H100-SXM"), lookup("t4")
    assert software.sdpa_kernel("bfloat16", a100, False, 64)[0] == "flash"
    assert software.sdpa_kernel("bfloat16", a100, True, 64)[0] == "mem_efficient"  # a mask rules out flash
    assert software.sdpa_kernel("float32", a100, False, 64)[0] == "mem_efficient"  # fp32 rules out flash
    assert software.sdpa_kernel("bfloat16", h100, True, 64)[::2] == ("flash", True)  # cuDNN on sm90: masks
    assert software.sdpa_kernel("float16", t4, True, 64)[0] == "mem_efficient"
    assert software.sdpa_kernel("float32", a100, True, 64, mem_efficient_enabled=False)[0] == "math"
    assert software.sdpa_kernel("float16", a100, True, 62)[0] == "math"  # misaligned head dim


def test_default_attention_table_and_resolution():
    assert software.default_backend("BERT") == "sdpa" and software.default_backend("RoBERTa") == "eager"
    assert software.default_backend("RoBERTa", "transformers5") == "sdpa"
    assert software.default_backend("DeBERTaV3") == software.default_backend("DeBERTaV3", "transformers5") == "eager"
    assert set(software.DEFAULT_ATTENTION) >= {s.family for s in MODELS.values()}
    with pytest.raises(UserError):
        software.default_backend("BERT", "transformers3")
    rtx = lookup("4090")
    # FlexBERT under fp32 weights: FA2 varlen, q/k/v cast to bf16 inside attention
    flex_bert = software.resolve_attention("auto", "float32", rtx, family="ModernBERT")
    assert (flex_bert.kernel, flex_bert.compute_dtype, flex_bert.packed, flex_bert.block_sparse) == (
        "flash", "bfloat16", True, True)
    assert flex_bert.rotary == "fused"  # FlexBERT's Triton rotary
    # outside the paper's environment RoPE is the model code's torch ops, for every backend
    for backend in ("varlen", "flex", "sdpa", "eager"):
        ours = software.resolve_attention(backend, "bfloat16", rtx, environment="transformers5", rotary="mbbench")
        assert ours.rotary == "mbbench", backend
    assert software.resolve_attention("sdpa", "float32", rtx, environment="transformers5").rotary == "transformers"
    with pytest.raises(UserError, match="unknown rotary code"):
        software.resolve_attention("sdpa", "float32", rtx, rotary="triton")
    h = 768
    # counted from the code (perfmodel.rotary_bytes): bf16 activations, fp32 arithmetic
    assert perfmodel.rotary_bytes(h, "fused", "bfloat16") == 4 * h * 2
    assert perfmodel.rotary_bytes(h, "mbbench", "bfloat16") == 4 * h * 6 + 2 * (2 * h * 4 + h * 2) == 44 * h
    assert perfmodel.rotary_bytes(h, "transformers", "bfloat16") == 2 * (10 * h * 4 + 3 * h * 6) == 116 * h
    assert perfmodel.rotary_bytes(h, "mbbench", "float32") == 56 * h < perfmodel.rotary_bytes(h, "transformers",
                                                                                              "float32") == 80 * h
    shape = Shape(hidden=h, ffn=1152, gated=True, heads=12, layers=22, vocab=50368, rotary=True)
    impl = software.resolve_attention("varlen", "bfloat16", rtx, environment="transformers5", rotary="mbbench")
    assert perfmodel.elementwise_bytes(shape, impl, software.PYTORCH, "bfloat16") == (10 * h + 3 * 2304) * 2 + 44 * h
    eager = software.resolve_attention("auto", "float32", rtx, family="RoBERTa", packed_model=False)
    assert eager.materialises_scores and eager.compute_dtype == "float32" and not eager.packed
    with pytest.raises(UserError, match="unknown attention backend"):
        software.resolve_attention("cudnn", "float32", rtx)
    assert software.stack_of_framework("MLPerf Inference closed, NVIDIA TensorRT harness") is software.TENSORRT


def test_calibration_rows_carry_their_stack():
    rows = calibration_rows()
    assert rows and all(r.stack is software.TENSORRT for r in rows)
    assert {r.dtype for r in rows} == {"float16"}


def test_forward_flops_hand_computed():
    bert = shape_of(MODELS["bert-base"])
    per_token_gemm = 2 * (768 * 2304 + 768 * 768 + 768 * 3072 + 3072 * 768)
    expected = 12 * (per_token_gemm * 1024 + 4 * 768 * 2 * 512 * 512)
    assert perfmodel.forward_flops(bert, [512, 512]) == pytest.approx(expected)
    # padded execution counts the padded tokens and pairs
    assert perfmodel.forward_flops(bert, [100, 512], padded_to=512) == pytest.approx(expected)
    # ModernBERT: local layers (14 of 22) attend their ±64 window (129 keys)
    mb = shape_of(MODELS["modernbert-base"])
    mb_gemm = 2 * (768 * 2304 + 768 * 768 + 768 * 2304 + 1152 * 768)
    mb_expected = 22 * mb_gemm * 1000 + 8 * 4 * 768 * 1000 ** 2 + 14 * 4 * 768 * 1000 * 129
    assert perfmodel.forward_flops(mb, [1000]) == pytest.approx(mb_expected)
    # DeBERTa: + c2p and p2c (4·tokens·512·hidden) + relative projections (4·512·hidden²) per layer
    deberta = shape_of(MODELS["deberta-v3-base"])
    extra = 12 * (4 * 1024 * 512 * 768 + 4 * 512 * 768 * 768)
    assert perfmodel.forward_flops(deberta, [512, 512]) == pytest.approx(expected + extra)


def test_registry_shapes_carry_family_work():
    deberta = shape_of(MODELS["deberta-v3-base"])
    assert (deberta.attention_kind, deberta.position_buckets, deberta.relative_span) == ("disentangled", 256, 512)
    assert deberta.parameters == pytest.approx(183.8e6, rel=0.01)  # backbone 86M + embeddings 98M
    assert shape_of(MODELS["eurobert-610m"]).kv_heads == 6
    assert shape_of(MODELS["eurobert-610m"]).gemms()["qkv"] == (1152, 1152 + 2 * 6 * 64)
    assert shape_of(MODELS["gte-en-mlm-base"]).rotary and not shape_of(MODELS["bert-base"]).rotary


def test_eager_and_varlen_predictions_differ():
    shape = shape_of(MODELS["modernbert-base"])
    a100 = lookup("A100-SXM4-80GB")
    lengths = [300, 512, 128, 477] * 8
    varlen = software.resolve_attention("varlen", "bfloat16", a100)
    eager = software.resolve_attention("eager", "bfloat16", a100)
    fast = workload.predict_suite(shape, lengths, 32, a100, "bfloat16", varlen, None, default_calibration())
    slow = workload.predict_suite(shape, lengths, 32, a100, "bfloat16", eager, None, default_calibration())
    assert slow.tokens_per_second < 0.8 * fast.tokens_per_second  # padded rows, materialised scores
    assert slow.max_batch_size < fast.max_batch_size
    assert slow.flops > fast.flops  # padding and full attention on local layers are executed work
    assert fast.compute_dtypes == {"weights": "bfloat16", "gemm": "bfloat16", "attention": "bfloat16"}
    rtx = lookup("4090")
    paper = workload.predict_suite(shape, [512] * 64, 64, rtx, "float32",
                                   software.resolve_attention("varlen", "float32", rtx), None, default_calibration())
    assert paper.compute_dtypes == {"weights": "float32", "gemm": "float32", "attention": "bfloat16"}
    assert any("bfloat16 under float32" in note for note in paper.notes)
    with pytest.raises(UserError, match="no bf16"):
        software.resolve_attention("eager", "bfloat16", lookup("t4"))


def test_memory_model_terms():
    shape = shape_of(MODELS["modernbert-base"])
    tokens = 8 * 512
    est = memory.estimate(shape, batch=8, seq=512, dtype_bytes=2, backend="varlen")
    assert est.weights == pytest.approx(shape.parameters * 2)
    glu_step = 2 * 768 + 2304 + 2304
    attention_step = 2 * 768 + 3 * 768 + 4 * 768 + 768
    workspace = tokens * 12 * 4  # log-sum-exp
    assert attention_step * tokens * 2 + workspace > glu_step * tokens * 2  # the attention step is the peak
    assert est.activations == pytest.approx(tokens * 2 * attention_step)
    assert est.attention == workspace
    assert est.overhead == pytest.approx(memory.ALLOCATOR_OVERHEAD * est.activations)
    eager = memory.estimate(shape, 8, 512, 2, "eager")
    assert eager.attention == 8 * 512 * 512 + 2 * 8 * 12 * 512 * 512 * 2  # mask + scores and probabilities
    deberta = shape_of(MODELS["deberta-v3-base"])
    impl = software.resolve_attention("eager", "float32", lookup("4090"), packed_model=False)
    assert memory.attention_bytes(deberta, 4, 512, impl, 4) == 4 * 512 * 512 + 7 * 4 * 12 * 512 * 512 * 4
    cap = 24e9
    best = memory.max_batch(shape, 512, cap, 2, "varlen")
    budget = cap - memory.DRIVER_RESERVED_BYTES - memory.CUDA_CONTEXT_BYTES
    assert best % 2 == 0
    assert memory.estimate(shape, best, 512, 2).peak <= budget < memory.estimate(shape, best + 2, 512, 2).peak


def test_capacity_is_in_the_bytes_nvml_reports():
    h200 = lookup("h200")
    assert memory.capacity_bytes(h200) == 143_771 * 2**20
    assert memory.capacity_bytes(h200) == pytest.approx(150.75e9, rel=1e-3)
    assert memory.capacity_bytes(lookup("4090")) == 24_564 * 2**20
    shape = shape_of(MODELS["modernbert-large"])
    in_bytes = memory.max_batch(shape, 8192, memory.capacity_bytes(h200), 2, "varlen")
    in_gb = memory.max_batch(shape, 8192, h200.memory_gb * 1e9, 2, "varlen")
    assert in_bytes > in_gb  # 150.75e9 B, not 141e9
    peak = memory.estimate(shape, in_bytes, 8192, 2, "varlen").peak
    assert peak <= memory.usable_bytes(memory.capacity_bytes(h200))
    rtx = lookup("4090")
    prediction = workload.predict_suite(shape, [8192] * 32, 32, h200, "bfloat16",
                                        software.resolve_attention("varlen", "bfloat16", h200), None,
                                        default_calibration())
    assert prediction.capacity_bytes == 143_771 * 2**20 and prediction.max_batch_size == in_bytes
    assert memory.capacity_bytes(rtx) < 26e9


def test_leave_one_gpu_out_error_on_calibration():
    rows = leave_one_gpu_out()
    assert len({r.gpu for r in rows}) == 5 and {r.source for r in rows} == {"calibration-logo"}
    assert statistics.median(abs(r.error) for r in rows) < 0.25


def test_efficiency_splits_hardware_and_software():
    calibration = calibrate()
    rtx, a100 = lookup("4090"), lookup("A100-SXM4-40GB")
    eta_hw, source = calibration.hardware(rtx)
    assert source == "from-specs (Ada Lovelace)" and 0.1 <= eta_hw <= 0.95
    assert calibration.hardware(a100)[1] == "fitted"
    simt = calibration.software[("pytorch", "simt")]
    assert 0.3 < simt < 1.0 and "paper" in calibration.software_sources[("pytorch", "simt")]
    assert calibration.efficiency(rtx, software.PYTORCH, "float32")[0] == pytest.approx(eta_hw * simt)
    assert calibration.efficiency(rtx, software.TENSORRT, "float16")[0] == pytest.approx(eta_hw)
    tensor = calibration.software_factor(software.PYTORCH, "tensor", "Turing")
    assert tensor == calibration.architecture_software[("pytorch", "tensor", "Turing")]
    assert calibration.software_factor(software.PYTORCH, "tensor", "Hopper") == calibration.software[("pytorch", "tensor")]


def test_spec_model_by_hand():
    """η_hw from specs: exp(intercept[architecture] + slope · ln(W per SM)), clamped; an architecture without fit
    rows takes the mean intercept and says so."""
    model = perfmodel.SpecModel(0.5, {"Hopper": math.log(0.3), "Ampere": math.log(0.2)})
    h100, b200 = lookup("H100-SXM"), lookup("B200")
    eta, source = model.efficiency(h100)
    assert eta == pytest.approx(0.3 * (700 / 132) ** 0.5) and source == "from-specs (Hopper)"
    eta, source = model.efficiency(b200)
    assert eta == pytest.approx(min(math.sqrt(0.3 * 0.2) * (1000 / 148) ** 0.5, 0.95))
    assert "no Blackwell data" in source
    assert perfmodel.SpecModel(3.0, {"Hopper": 0.0}).efficiency(h100)[0] == perfmodel.ETA_RANGE[1]
    slope = fits.within_architecture_slope({"A": [(0.0, 0.0), (1.0, 0.5)], "B": [(2.0, 1.0), (3.0, 1.5)],
                                            "C": [(9.0, 9.0)]})
    assert slope == pytest.approx(0.5)  # a one-GPU architecture does not inform the slope


def test_sm80_attention_kernels_are_slower_on_hopper():
    h100, a100 = lookup("H100-SXM"), lookup("A100-SXM4-80GB")
    varlen = software.resolve_attention("varlen", "bfloat16", h100)
    assert perfmodel.kernel_efficiency(varlen, a100) == perfmodel.KERNEL_EFFICIENCY["flash"]
    assert perfmodel.kernel_efficiency(varlen, h100) == pytest.approx(0.35)  # FlashAttention-3 paper: FA2 at 35 %
    cudnn = software.resolve_attention("sdpa", "bfloat16", h100, packed_model=False)
    assert cudnn.sm90_native and perfmodel.kernel_efficiency(cudnn, h100) == perfmodel.KERNEL_EFFICIENCY["flash"]

def test_paper_heuristic_matches_hand_count():
    base = shape_of(MODELS["modernbert-base"])
    # Wqkv 768x2304 = 3*18 = 54 blocks (128x256); on 40 SMs: 54 % 40 = 14 -> 0.35
    t4 = lookup("t4")
    blocks = math.ceil(768 / 128) * math.ceil(2304 / 256)
    assert blocks == 54 and (blocks % t4.sm_count) / t4.sm_count == pytest.approx(0.35)
    assert 0 < perfmodel.paper_heuristic(base, t4) <= 1


def test_sweep_ranks_aligned_shapes_and_modernbert(tmp_path):
    result = CliRunner().invoke(cli, ["sweep", "--hidden", "704:832:32", "--glu", "2048:2560:32", "--layers", "22",
                                      "--gpus", "basket", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    import pandas as pd

    frame = pd.read_csv(tmp_path / "sweep.csv")
    assert (tmp_path / "sweep_heatmap.png").stat().st_size > 1000
    assert set(frame["T4_dtype"]) == {"float16"} and set(frame["A100-SXM4-80GB_dtype"]) == {"bfloat16"}
    mb = frame[(frame.hidden == 768) & (frame.glu == 2304)].iloc[0]
    assert mb["rank"] <= len(frame) / 2
    score = {(r.hidden, r.glu): r.basket_score for r in frame.itertuples()}
    for (hidden, glu), value in score.items():
        if glu % 128 == 0 and hidden % 64 == 0:  # aligned: GLU half a multiple of 64
            for neighbour in (glu - 32, glu + 32):
                if (hidden, neighbour) in score:
                    assert value > score[(hidden, neighbour)], (hidden, glu, neighbour)


def test_predict_runs_without_a_gpu(tmp_path):
    result = CliRunner().invoke(cli, ["run", "--model", "modernbert-base", "--suite", "short-fixed", "--gpu", "4090",
                                      "--predict", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    [path] = list(tmp_path.rglob("*.json"))
    record = json.loads(path.read_text())
    assert record["kind"] == "predicted" and "prediction" in path.name and path.parent.name == "RTX4090"
    payload = record["payload"]
    assert payload["model_version"] == perfmodel.MODEL_VERSION
    assert payload["tokens_per_second"] > 0 and 0 < payload["mfu"] < 1 and payload["max_batch_size"] > 0
    long = CliRunner().invoke(cli, ["run", "--model", "bert-base", "--suite", "long-fixed", "--gpu", "t4",
                                    "--predict", "--out", str(tmp_path)])
    assert long.exit_code == 0 and "unsupported" in long.output


@pytest.mark.parametrize("gpu_id", ["T4", "A10", "RTX4090", "H100-SXM"])
def test_one_default_attention_rule_for_predictions_and_runs(gpu_id, monkeypatch):
    """`software.auto_backend` (every prediction's default) picks what a run's `auto` picks on that GPU when
    flash-attn is not installed: the first of the CUDA order the GPU can run (a T4 gets flex, not xformers)."""
    import torch

    from mbbench.models import attention

    gpu = lookup(gpu_id)
    monkeypatch.setattr(attention, "_cuda_capability", lambda device: gpu.compute_capability)
    monkeypatch.setattr(attention.FlashAttn, "availability",
                        lambda self, device, dtype: attention.Availability(False, "not installed"))
    chosen = attention.choose_backend(torch.device("cuda"), torch.bfloat16, [512], needs_window=True).name
    assert software.auto_backend(gpu, packed_model=True) == chosen
    assert software.auto_backend(gpu, packed_model=False) == "sdpa"
    assert perfmodel.default_attention(shape_of(MODELS["modernbert-base"]), gpu, "float16").backend == chosen


def test_a_predicted_record_carries_no_host_compute_fields(tmp_path):
    """A GPU prediction is made on this host, but its numbers depend on none of the host's threads, CPU units or
    malloc: its environment leaves them out; the software and commit stay."""
    result = CliRunner().invoke(cli, ["predict", "--model", "bert-base", "--suite", "short-fixed", "--gpu", "t4",
                                      "--out", str(tmp_path), "--quiet"])
    assert result.exit_code == 0, result.output
    (path,) = tmp_path.rglob("*.json")
    environment = json.loads(path.read_text())["environment"]
    assert not set(environment) & {"cpu_threads", "cpu_capability", "cpu_isa", "allocator"}
    assert {"torch", "git_commit", "mbbench"} <= set(environment)
