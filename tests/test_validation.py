"""The performance and memory models against the ModernBERT paper's RTX 4090 table and other published numbers."""

import itertools
import statistics

import pytest

from mbbench import calibration as fits
from mbbench import validation
from mbbench.hardware import memory, perfmodel

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


def test_data_never_fitted_on_is_predicted_within_25_percent_at_the_median(paper):
    held_out = [*[r for r in paper if r.source == "paper-4090-lomo"], *validation.calibration_validation(),
                *validation.mlperf_validation()]
    assert not any(r.in_fit for r in held_out)
    medians = validation.median_errors(held_out)
    assert set(medians) == {("paper-4090-lomo", "tokens_per_second"), ("calibration-logo", "tokens_per_second"),
                            ("calibration-lomo", "tokens_per_second"), ("mlperf-ratio", "throughput_ratio")}
    assert all(value < 0.25 for value in medians.values()), medians
    assert statistics.median(abs(r.error) for r in held_out) < 0.25


def test_few_fitted_parameters(calibration):
    # η_hw: one per calibration GPU (TensorRT rows); η_sw: only (pytorch, simt) moves from its prior
    assert set(calibration.efficiencies) == {o.gpu for o in fits.calibration_rows()}
    moved = {key for key, value in calibration.software.items() if value != perfmodel.DEFAULT_SOFTWARE[key]}
    assert moved == {("pytorch", "simt")}
    held_out = perfmodel.Calibration(dict(calibration.efficiencies))
    value = fits.fit_software(held_out, ("deberta-v3-base",))
    assert value != calibration.software[("pytorch", "simt")]
    assert "without deberta-v3-base" in held_out.software_sources[("pytorch", "simt")]
    overheads = fits.implied_allocator_overhead()

    assert memory.ALLOCATOR_OVERHEAD == pytest.approx(statistics.median(overheads), abs=0.005)


def test_measured_records_are_validated(calibration):
    record = {"kind": "measured", "status": "ok", "registry_model": "modernbert-base", "suite": "short-fixed",
              "dtype": "bfloat16", "backend": "varlen", "batch_size": 512, "protocol": "paper", "num_documents": 1024,
              "gpu_id": "H100-SXM", "tokens_per_second": 1.0e6, "measurement": "throughput", "tiny": False}
    search = record | {"measurement": "max_batch", "max_batch_size": 4000, "tokens_per_second": None}
    rows = validation.record_validation([record, {**record, "status": "failed"}, search], calibration)
    assert [r.metric for r in rows] == ["tokens_per_second", "max_batch_size"]
    assert all(r.source == "measured" and r.gpu == "H100-SXM" and r.backend == "varlen" for r in rows)
    assert rows[0].predicted > 0 and rows[0].error == pytest.approx(rows[0].predicted / 1.0e6 - 1)
