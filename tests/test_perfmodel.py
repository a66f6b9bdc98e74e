import json
import math
import statistics

import pytest
from click.testing import CliRunner

from mbbench.cli import cli
from mbbench.hardware import memory, perfmodel
from mbbench.hardware.gpus import basket, lookup, match_device_name
from mbbench.predict import shape_of
from mbbench.models.registry import MODELS


def test_wave_and_tile_quantization_hand_computed():
    assert perfmodel.waves(109, 108) == 2 and perfmodel.waves(108, 108) == 1
    a100 = lookup("A100-SXM4-80GB")
    t257 = perfmodel.gemm(8192, 257, 4096, a100, "float16")
    t384 = perfmodel.gemm(8192, 384, 4096, a100, "float16")
    t256 = perfmodel.gemm(8192, 256, 4096, a100, "float16")
    assert t256.seconds < t384.seconds
    # N = 257 in 128x128 tiles needs as many tiles as N = 384 (3 columns of 64 rows) ...
    assert t384.tile == (128, 128) and t384.tiles == 64 * 3 == math.ceil(8192 / 128) * math.ceil(257 / 128)
    # ... and, being unaligned too, the best tile the model finds for it is slower than padding to 384
    assert t257.seconds > t384.seconds


def test_tile_count_staircase():
    a100 = lookup("A100-SXM4-80GB")
    e = perfmodel.gemm(16384, 2304, 768, a100)
    assert e.tiles == math.ceil(16384 / e.tile[0]) * math.ceil(2304 / e.tile[1])
    assert 0 < e.wave_efficiency <= 1 and 0 < e.tile_efficiency <= 1


def test_peaks_follow_accumulate_mode_and_dtype_support():
    assert lookup("4090").peak_tflops("bfloat16") == pytest.approx(165.2)  # fp32-accumulate half rate
    assert lookup("RTX 4090").fp16_fp16acc_tflops == pytest.approx(330.3)
    t4 = lookup("t4")
    assert t4.bf16_tflops is None and t4.effective_dtype("bfloat16") == "float16"
    assert t4.peak_tflops("bfloat16") == 65
    p = perfmodel.predict(shape_of(MODELS["modernbert-base"]), [512] * 32, "t4", "bfloat16")
    assert p.dtype == "float16"


def test_aliases_and_detection_names():
    assert lookup("rtx4090").id == lookup("4090").id == "RTX4090"
    assert match_device_name("NVIDIA H100 80GB HBM3").id == "H100-SXM"
    assert match_device_name("NVIDIA H200").id == "H200-SXM"
    assert match_device_name("NVIDIA GeForce RTX 4090").id == "RTX4090"
    assert match_device_name("Some Future GPU") is None
    assert {"T4", "A10", "L4", "RTX3090", "RTX4090", "A100-SXM4-40GB", "A100-PCIe-80GB", "H100-SXM", "H100-PCIe",
            "H200-SXM", "L40S", "RTX6000Ada", "B200"} <= set(basket())


def test_leave_one_gpu_out_error_on_calibration():
    rows = perfmodel.leave_one_gpu_out(list(perfmodel.calibration_rows()))
    assert len({r["gpu"] for r in rows}) >= 4
    assert statistics.median(abs(r["error"]) for r in rows) < 0.25


def test_paper_heuristic_matches_hand_count():
    base = shape_of(MODELS["modernbert-base"])
    # Wqkv 768x2304 = 3*18 = 54 blocks (128x256); on 40 SMs: 54 % 40 = 14 -> 0.35
    t4 = lookup("t4")
    blocks = math.ceil(768 / 128) * math.ceil(2304 / 256)
    assert blocks == 54 and (blocks % t4.sm_count) / t4.sm_count == pytest.approx(0.35)
    assert 0 < perfmodel.paper_heuristic(base, t4) <= 1


def test_memory_model_terms():
    shape = shape_of(MODELS["modernbert-base"])
    est = memory.estimate(shape, batch=8, seq=512, dtype_bytes=2, backend="varlen")
    assert est.weights == pytest.approx(shape.parameters * 2)
    tokens = 8 * 512
    glu_step = 2 * 768 + 2304 + 2304
    assert est.activations == pytest.approx(tokens * 2 * max(glu_step, 2 * 768 + 3 * 768 + 4 * 768 + 768))
    assert est.attention == tokens * 12 * 4
    assert est.overhead == pytest.approx(0.1 * (est.activations + est.attention))
    eager = memory.estimate(shape, 8, 512, 2, "eager")
    assert eager.attention == 8 * 512 * 512 + 2 * 8 * 12 * 512 * 512 * 4
    cap = 24e9
    best = memory.max_batch(shape, 512, cap, 2, "varlen")
    assert best % 2 == 0
    assert memory.estimate(shape, best, 512, 2).peak <= cap - memory.CUDA_CONTEXT_BYTES
    assert memory.estimate(shape, best + 2, 512, 2).peak > cap - memory.CUDA_CONTEXT_BYTES


def test_sweep_ranks_aligned_shapes_and_modernbert(tmp_path):
    result = CliRunner().invoke(cli, ["sweep", "--hidden", "704:832:32", "--glu", "2048:2560:32", "--layers", "22",
                                      "--gpus", "basket", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    import pandas as pd

    frame = pd.read_csv(tmp_path / "sweep.csv")
    assert (tmp_path / "sweep_heatmap.png").stat().st_size > 1000
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
