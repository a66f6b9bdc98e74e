"""The performance and memory models against the ModernBERT paper's RTX 4090 table and other published numbers."""

import dataclasses
import itertools
import math
import statistics

import pytest
from click.testing import CliRunner

from mbbench import calibration as fits
from mbbench.cli import cli
from mbbench import published as published_data
from mbbench import validation
from mbbench.hardware import memory, perfmodel
from mbbench.hardware.gpus import basket


@pytest.fixture(scope="module")
def calibration():
    return fits.calibrate()


@pytest.fixture(scope="module")
def paper(calibration):
    return validation.paper_validation(calibration)


def cell(rows, model, suite, metric="tokens_per_second", source="paper-4090"):
    [row] = [r for r in rows if (r.source, r.model, r.suite, r.metric) == (source, model, suite, metric)]
    return row


def ratio_error(a, b):
    return (a.predicted / b.predicted) / (a.measured / b.measured) - 1.0


def test_every_measured_cell_of_the_paper_table_is_predicted(paper):
    measured = [r for r in fits.paper_rows() if r.measured]
    assert len([r for r in paper if r.source == "paper-4090" and r.metric == "tokens_per_second"]) == len(measured)
    assert len([r for r in paper if r.metric == "max_batch_size"]) == 20
    assert cell(paper, "nomic-bert", "long-fixed").predicted > 0  # the paper ran NomicBERT at 8192 tokens
    assert cell(paper, "deberta-v3-base", "short-fixed").backend == "eager"
    assert cell(paper, "bert-base", "short-fixed").backend == "sdpa"


@pytest.mark.parametrize("a, b", [
    (("deberta-v3-base", "short-fixed"), ("bert-base", "short-fixed")),
    (("deberta-v3-large", "short-fixed"), ("bert-large", "short-fixed")),
    (("roberta-base", "short-fixed"), ("bert-base", "short-fixed")),
    (("roberta-large", "short-fixed"), ("bert-large", "short-fixed")),
    (("modernbert-base", "long-fixed"), ("gte-en-mlm-base", "long-fixed")),
    (("modernbert-large", "long-fixed"), ("gte-en-mlm-large", "long-fixed")),
    (("modernbert-base", "long-variable"), ("gte-en-mlm-base-unpadded", "long-variable")),
    (("modernbert-large", "short-fixed"), ("modernbert-base", "short-fixed")),
    (("modernbert-large", "long-fixed"), ("modernbert-base", "long-fixed")),
    (("bert-large", "short-fixed"), ("bert-base", "short-fixed")),
    (("modernbert-base", "long-variable"), ("modernbert-base", "long-fixed")),
    (("modernbert-large", "long-variable"), ("modernbert-large", "long-fixed")),
    (("gte-en-mlm-base-unpadded", "long-variable"), ("gte-en-mlm-base-unpadded", "long-fixed")),
])
def test_named_paper_ratios_within_30_percent(paper, a, b):
    assert abs(ratio_error(cell(paper, *a), cell(paper, *b))) <= 0.30


def test_every_pairwise_paper_ratio_within_30_percent(paper):
    rows = [r for r in paper if r.source == "paper-4090" and r.metric == "tokens_per_second"]
    errors = [abs(ratio_error(a, b)) for a, b in itertools.permutations(rows, 2)]
    assert len(errors) == 28 * 27 and max(errors) <= 0.30


def test_roberta_base_is_validated_against_its_notebook_and_shows_the_printed_value(paper):
    # Table 11 prints 23.3 s for RoBERTa-base, BERT-base's time to the digit; its spot-check notebook ran 31.32 s
    # for the same 8192 x 512 tokens. Eager attention (its max batch, 664 vs 1096, shows materialised scores) makes
    # the notebook's time the physical one: RoBERTa-large is likewise 0.77x BERT-large in the same table.
    [row] = [r for r in fits.paper_rows() if (r.model, r.suite) == ("roberta-base", "short-fixed")]
    assert row.tokens_per_second == pytest.approx(8192 * 512 / 31.32)
    assert row.printed_tokens_per_second == pytest.approx(179.9e3) and "notebook" in row.note
    assert [r for r in fits.paper_rows() if r.note] == [row]  # the only corrected cell
    printed = cell(paper, "roberta-base", "short-fixed", source="paper-4090-as-printed")
    validated = cell(paper, "roberta-base", "short-fixed")
    assert printed.predicted == validated.predicted and not printed.in_fit
    bert = cell(paper, "bert-base", "short-fixed")
    assert abs(ratio_error(validated, bert)) <= 0.10 < abs(ratio_error(printed, bert))


def test_every_max_batch_within_25_percent(paper):
    rows = [r for r in paper if r.metric == "max_batch_size"]
    assert all(abs(r.error) <= 0.25 for r in rows), [(r.model, r.suite, r.measured, r.predicted) for r in rows]
    assert cell(paper, "deberta-v3-base", "short-fixed", "max_batch_size").predicted < 300  # not BERT's ~1100
    assert cell(paper, "roberta-base", "short-fixed", "max_batch_size").predicted < 800  # eager scores


@pytest.fixture(scope="module")
def published():
    return list(validation.published_validation())


def test_data_never_fitted_on_is_predicted_within_25_percent_at_the_median(published):
    cross = [r for r in published if not r.in_fit and r.source != "paper-4090-as-printed"]
    assert not any(r.in_fit for r in cross)
    medians = validation.median_errors(cross)
    assert set(medians) == {("paper-4090-lomo", "tokens_per_second"), ("calibration-logo", "tokens_per_second"),
                            ("calibration-lomo", "tokens_per_second"), ("mlperf-holdout", "throughput_ratio"),
                            ("pytorch-logo", "tokens_per_second"), ("pytorch-holdout", "tokens_per_second")}
    assert all(value < 0.25 for value in medians.values()), medians
    assert statistics.median(abs(r.error) for r in cross) < 0.25


def test_few_fitted_parameters(calibration):
    # η_hw: one per GPU with TensorRT demo rows or MLPerf fit rows (pooled); the spec model: one slope and one
    # intercept per architecture with fit rows; η_sw: (pytorch, simt) and (pytorch, tensor) move from their priors,
    # the latter per architecture
    mlperf_fit = {r.gpu for r in fits.fit_rows(published_data.mlperf_rows())}
    assert set(calibration.efficiencies) == {o.gpu for o in fits.calibration_rows()} | mlperf_fit
    assert mlperf_fit == {"H100-SXM", "H100-PCIe", "T4", "L4"}
    assert set(calibration.spec.intercepts) == {"Ampere", "Ada Lovelace", "Turing", "Hopper"}
    assert "MLPerf v3.0" in calibration.spec.sources["Hopper"] and "MLPerf v0.7" in calibration.spec.sources["Turing"]
    assert "TensorRT demo rows; MLPerf v3.0 bert-99.9 (fp16)" in calibration.spec.sources["Ada Lovelace"]
    moved = {key for key, value in calibration.software.items() if value != perfmodel.DEFAULT_SOFTWARE[key]}
    assert moved == {("pytorch", "simt"), ("pytorch", "tensor"), ("pytorch", "tf32")}
    assert calibration.software[("pytorch", "tf32")] == calibration.software[("pytorch", "tensor")]  # one fit, two paths
    assert set(calibration.architecture_software) == {("pytorch", path, arch) for path in ("tensor", "tf32")
                                                      for arch in ("Ampere", "Turing")}
    held_out = perfmodel.Calibration(dict(calibration.efficiencies), spec=calibration.spec)
    value = fits.fit_software(held_out, ("deberta-v3-base",))
    assert value != calibration.software[("pytorch", "simt")]
    assert "without deberta-v3-base" in held_out.software_sources[("pytorch", "simt")]
    overheads = fits.implied_allocator_overhead()

    assert memory.ALLOCATOR_OVERHEAD == pytest.approx(statistics.median(overheads), abs=0.005)


def _constants(calibration):
    return (calibration.efficiencies, calibration.spec.slope, calibration.spec.intercepts, calibration.software,
            calibration.architecture_software)


def _scaled(rows, use, factor):
    """`rows` with the value of every row of `use` multiplied by `factor`."""
    field = "samples_per_s" if hasattr(rows[0], "samples_per_s") else "sequences_per_s"
    return tuple(dataclasses.replace(r, **{field: getattr(r, field) * factor}) if r.use == use else r for r in rows)


def test_no_fitted_constant_reads_a_held_out_row(monkeypatch, calibration):
    """Every held-out MLPerf and PyTorch row moved by 1.7x: every constant stays; the same move of the fit rows
    changes them (so this test can fail)."""
    mlperf, pytorch = published_data.mlperf_rows(), published_data.published_rows()
    before = [r.measured for r in validation.mlperf_validation(calibration) if r.source == "mlperf-holdout"]
    monkeypatch.setattr(published_data, "mlperf_rows", lambda: _scaled(mlperf, "holdout", 1.7))
    monkeypatch.setattr(published_data, "published_rows", lambda: _scaled(pytorch, "holdout", 1.7))
    assert _constants(fits.calibrate()) == _constants(calibration)
    after = [r.measured for r in validation.mlperf_validation(calibration) if r.source == "mlperf-holdout"]
    assert after == pytest.approx([1.7 * value for value in before])  # the perturbation reached the rows
    monkeypatch.setattr(published_data, "mlperf_rows", lambda: _scaled(mlperf, "fit", 1.7))
    monkeypatch.setattr(published_data, "published_rows", lambda: _scaled(pytorch, "fit", 1.7))
    changed = fits.calibrate()
    assert changed.spec.intercepts["Hopper"] != calibration.spec.intercepts["Hopper"]
    assert changed.software[("pytorch", "tensor")] != calibration.software[("pytorch", "tensor")]


def test_a_gpu_pools_its_sources_one_vote_each():
    """Demo η 0.36 and two MLPerf rows implying 0.40 and 0.44 (mean 0.42): √(0.36·0.42); a GPU with one source
    keeps it; the demo η of a GPU without MLPerf rows passes through."""
    pooled = fits.pool_sources({"T4": 0.36, "A30": 0.6}, {"T4": [0.40, 0.44], "H100-SXM": [0.63]})
    assert pooled == pytest.approx({"T4": math.sqrt(0.36 * 0.42), "A30": 0.6, "H100-SXM": 0.63})


def test_the_spec_slope_reads_the_demo_rows_alone(calibration):
    """The slope within architectures is the demo rows' (one source): pooling moves the intercepts, not it."""
    demo = fits.fit_efficiencies(list(fits.calibration_rows()))
    assert calibration.spec.slope == pytest.approx(fits.within_architecture_slope(fits.efficiency_points(demo)))
    assert calibration.efficiencies["L4"] > demo["L4"] and calibration.efficiencies["T4"] > demo["T4"]
    assert calibration.efficiencies["A30"] == demo["A30"]


def test_no_gpu_from_specs_passes_the_best_fitted_gpu(calibration):
    """The B200's power per SM (6.8 W) extrapolates past every fitted GPU: it is held at the best fitted η."""
    best = max(calibration.efficiencies.values())
    assert calibration.spec.ceiling == best
    assert calibration.hardware(basket()["B200"])[0] == pytest.approx(best)
    assert all(calibration.hardware(gpu)[0] <= best for gpu in basket().values())


def test_hopper_mlperf_ratios_within_15_percent(published):
    hopper = [r for r in published if r.source.startswith("mlperf") and r.architecture == "Hopper"]
    assert {r.source for r in hopper} == {"mlperf-fit", "mlperf-holdout"} and len(hopper) == 6
    assert all(abs(r.error) <= 0.15 for r in hopper), [(r.gpu, r.note[:20], r.error) for r in hopper]


def test_t4_leave_one_gpu_out(published):
    """The T4's demo rows with every constant refitted without them (its η from MLPerf v0.7's fp16 row alone):
    15 to 19 % over, inside the issue's 20 %."""
    t4 = [r for r in published if r.source == "calibration-logo" and r.gpu == "T4"]
    assert len(t4) == 4 and all(0 < r.error <= 0.20 for r in t4), [r.error for r in t4]
    # its PyTorch rows with η_sw fitted without them (Ampere's): within 20 % once its η pools demo and MLPerf
    torch_rows = [r for r in published if r.source == "pytorch-logo" and r.gpu == "T4"]
    assert len(torch_rows) == 2 and all(-0.20 <= r.error < 0 for r in torch_rows), [r.error for r in torch_rows]


def test_the_held_out_section_median_and_worst(published):
    rows = validation.held_out(published)
    assert {r.source for r in rows} == {"mlperf-holdout", "pytorch-holdout"} and not any(r.in_fit for r in rows)
    summary = validation.summarise(rows)
    assert summary.rows == len(rows) == 12 and summary.median <= 0.15
    # none past 30 %: the worst is MLPerf v3.1's L4, whose v3.0 row is pooled with the demo rows (-18 %; -33 % on the
    # demo rows alone, docs/benchmarking.md)
    assert summary.worst <= 0.30, [(r.gpu, r.source, r.error) for r in rows if abs(r.error) > 0.30]
    # five of them repeat a fitted GPU's MLPerf system in another round (the H100s, the L4): said apart
    repeats = [r for r in rows if validation.repeats_a_fit_row(r)]
    assert sorted(r.gpu for r in repeats) == ["H100-PCIe", "H100-SXM", "H100-SXM", "H100-SXM", "L4"]
    assert validation.summarise([r for r in rows if r not in repeats]).median <= 0.15


def test_error_per_architecture_and_stack(published):
    table = validation.architecture_errors(published)
    assert {("Hopper", "tensorrt"), ("Turing", "tensorrt"), ("Ampere", "pytorch"), ("Ada Lovelace", "pytorch")} \
        <= set(table)
    hopper = table[("Hopper", "tensorrt")]
    assert hopper.rows == 4 and hopper.worst <= 0.15 and hopper.median <= hopper.worst


def test_every_band_contains_its_prediction_or_says_it_is_too_thin():
    from mbbench.bands import MIN_ROWS, error_band
    from mbbench.hardware.gpus import basket

    for gpu in basket().values():
        for dtype in ("float32", "float16", "bfloat16"):
            band = error_band(gpu.id, dtype)
            if band.thin:
                assert "too thin" in band.basis and band.around(1000.0) is None
                continue
            assert band.low <= 1.0 <= band.high and band.rows >= MIN_ROWS, (gpu.id, dtype, band)
            low, high = band.around(1000.0)
            assert low <= 1000.0 <= high
    assert error_band("B200", "bfloat16").thin  # no Blackwell rows at all
    assert "RTX4090's own" in error_band("RTX4090", "float32").basis
    assert "Hopper TensorRT rows (mlperf-holdout 4)" in error_band("H100-SXM", "bfloat16").basis


def test_measured_records_are_validated(calibration):
    record = {"kind": "measured", "status": "ok", "registry_model": "modernbert-base", "suite": "short-fixed",
              "dtype": "bfloat16", "backend": "varlen", "batch_size": 512, "protocol": "paper", "num_documents": 1024,
              "gpu_id": "H100-SXM", "tokens_per_second": 1.0e6, "measurement": "throughput", "tiny": False}
    search = record | {"measurement": "max_batch", "max_batch_size": 4000, "tokens_per_second": None}
    rows = validation.record_validation([record, {**record, "status": "failed"}, search], calibration)
    assert [r.metric for r in rows] == ["tokens_per_second", "max_batch_size"]
    assert all(r.source == "measured" and r.gpu == "H100-SXM" and r.backend == "varlen" for r in rows)
    assert rows[0].predicted > 0 and rows[0].error == pytest.approx(rows[0].predicted / 1.0e6 - 1)


def test_validate_model_prints_the_held_out_section_and_its_repeats():
    """The command's last lines: the tracked hold-out with its goals, then the rows that repeat a fitted system
    said apart from the rest."""
    result = CliRunner().invoke(cli, ["validate-model"])
    assert result.exit_code == 0, result.output
    held, repeats = result.output.strip().splitlines()[-2:]
    assert held.startswith("Held out (read by no fitted constant): 12 rows") and "median <= 15% (met)" in held
    assert "none > 30% (met)" in held
    assert repeats.startswith("Of them, 5 repeat a fitted GPU's MLPerf system in another round; the other 7")
