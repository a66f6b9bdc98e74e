"""Records you can trust: typed records, identity = everything that changes the number, one plan, one store.

Each test is a reproduction from issue 13 that failed before typed records and plans existed.
"""

import json
import types
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import mbbench.plan as plan_module
from mbbench import loading, results, runner
from mbbench.bench.throughput import PassTimes
from mbbench.cli import cli
from mbbench.engines import EngineInfo, PreparedEngine
from mbbench.plan import RunConfig, resolve
from mbbench.records import SCHEMA_VERSION, DeviceInfo, Record
from mbbench.report.render import build_report

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_1 = ROOT / "tests" / "fixtures" / "schema1"
TINY_RUN = ["run", "--model", "modernbert-base", "--tiny", "--device", "cpu", "--runs", "1", "--warmup", "0", "--quiet"]


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def record_files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.json"))


def test_schema_1_records_load_render_and_keep_their_numbers(tmp_path):
    paths = record_files(SCHEMA_1)  # copies of files once committed under results/ (issue 26 removed those)
    records = results.read_records([SCHEMA_1])
    assert len(records) == len(paths) == 3  # nothing lost
    ours = next(r for r in records if r.identity.model == "modernbert-base" and r.device.kind == "cpu")
    raw = json.loads(Path(ours.source_path).read_text())
    assert ours.migrated_from == 1 and raw["schema_version"] == 1  # migrated on read, the file untouched
    assert ours.payload.tokens_per_second == raw["tokens_per_second"]
    assert ours.identity.documents == 32 and ours.identity.batch_size == 32 and ours.identity.runs == 3
    assert ours.suite.path == "suites/short-variable.toml"  # the writer's absolute path is not carried on
    predicted = [r for r in records if r.kind == "predicted" and r.status == "ok"]
    assert predicted and all(r.payload.tokens_per_second > 0 and r.device.basket_id for r in predicted)
    md = (build_report([SCHEMA_1], tmp_path / "rep") / "report.md").read_text()
    assert "## RTX4090" in md and "## cpu" in md


def test_committed_records_are_one_format_without_absolute_paths_and_all_render(tmp_path):
    paths = record_files(ROOT / "results")
    texts = [p.read_text(encoding="utf-8") for p in paths]
    assert all(json.loads(t)["schema_version"] in (2, SCHEMA_VERSION) for t in texts)  # 2 migrates on read
    assert not [p for p, t in zip(paths, texts) if '": "/' in t or ':\\\\' in t], "an absolute path in a record"
    records = results.read_records([ROOT / "results"])
    assert len(records) == len(paths)
    md = (build_report([ROOT / "results"], tmp_path / "rep") / "report.md").read_text(encoding="utf-8")
    for record in records:  # every configuration has a row: in its device's table, or the paired table
        models = record.identity.models or (record.identity.model,)
        assert all(f"| {m}" in md for m in models), models


def test_round_trip_and_flatten():
    record = next(r for r in results.read_records([SCHEMA_1])
                  if r.kind == "measured" and r.identity.measurement == "throughput")
    again = Record.from_json(json.loads(json.dumps(record.to_json())))
    assert again.identity == record.identity and again.payload == record.payload and again.key == record.key
    row = again.flatten()
    assert row["tokens_per_second"] == record.payload.tokens_per_second and row["key"] == record.key
    frame = results.load(ROOT / "results")
    assert {"model", "suite", "tokens_per_second", "gpu_dir", "key"} <= set(frame.columns)


def test_a_record_never_carries_two_payloads_or_a_wrong_status():
    record = next(r for r in results.read_records([SCHEMA_1])
                  if r.kind == "measured" and r.identity.measurement == "throughput")
    with pytest.raises(ValueError, match="cannot carry"):
        Record(kind="measured", status="failed", identity=record.identity, device=record.device, model=None,
               suite=None, payload=record.payload)


def test_changed_suite_runs_warmup_or_weights_give_a_new_record(tmp_path):
    out = tmp_path / "res"
    suite = tmp_path / "mine.toml"
    suite.write_text('documents = 4\n[lengths]\ndistribution = "normal"\nmean = 100\nstd = 10\nmin = 8\nmax = 200\n')
    assert invoke(*TINY_RUN, "--suite", suite, "--out", out).exit_code == 0
    assert len(record_files(out)) == 1
    again = invoke(*TINY_RUN, "--suite", suite, "--out", out)
    assert "(skipped)" in again.output and len(record_files(out)) == 1  # same identity: skipped

    suite.write_text(suite.read_text().replace("mean = 100", "mean = 50"))
    assert invoke(*TINY_RUN, "--suite", suite, "--out", out).exit_code == 0
    assert len(record_files(out)) == 2  # the suite's fingerprint changed
    changed = [("--runs", "2"), ("--warmup", "1")]
    for index, (flag, value) in enumerate(changed, start=3):
        args = list(TINY_RUN)
        args[args.index(flag) + 1] = value
        assert invoke(*args, "--suite", suite, "--out", out).exit_code == 0
        assert len(record_files(out)) == index, flag


def test_weights_hash_is_part_of_the_identity(tmp_path):
    from mbbench.models import registry
    from mbbench.verify import to_hf_config

    cfg = registry.model_config(registry.get_spec("modernbert-base", tiny=True))
    checkpoints = []
    for seed in (1, 2):
        directory = tmp_path / f"ckpt{seed}"
        to_hf_config(cfg).save_pretrained(directory)  # the row's own config: a plan reads and checks it
        torch.save({"w": torch.full((2,), float(seed))}, directory / "pytorch_model.bin")
        checkpoints.append(directory)
    device = DeviceInfo("cpu", "test cpu")
    keys = {resolve(RunConfig("modernbert-base", "short-fixed", tiny=True, weights=str(d)), device=device).identity.key()
            for d in checkpoints}
    plain = resolve(RunConfig("modernbert-base", "short-fixed", tiny=True), device=device).identity
    assert len(keys) == 2 and plain.key() not in keys and plain.weights_sha256 is None
    assert cfg.vocab_size >= 16000  # tiny models keep every token id the suites draw


def test_records_differing_in_batch_or_docs_both_appear_in_the_report(tmp_path):
    out = tmp_path / "res"
    for docs, batch in ((8, 8), (4, 512)):
        result = invoke(*TINY_RUN, "--suite", "short-variable", "--docs", docs, "--batch-size", batch, "--out", out)
        assert result.exit_code == 0, result.output
    md = (build_report([out], tmp_path / "rep", include_smoke=True) / "report.md").read_text()
    section = md.split("## cpu\n")[1].split("\n## ")[0]
    rows = [line for line in section.splitlines() if line.startswith("| modernbert-base-tiny")]
    assert len(rows) == 2
    assert any("batch=8" in r and "docs=8" in r for r in rows) and any("docs=4" in r for r in rows)


def test_two_hosts_of_one_configuration_are_shown_apart_and_repeats_say_which_was_kept(tmp_path):
    base = next(r for r in results.read_records([SCHEMA_1])
                if r.kind == "measured" and r.identity.model == "modernbert-base")
    root = tmp_path / "res"
    for index, (host, created) in enumerate((("a", "2026-11-01"), ("b", "2026-11-02"), ("b", "2026-11-03"))):
        data = base.to_json() | {"created_at": f"{created}T00:00:00+00:00"}
        data["environment"] = data["environment"] | {"host": host}
        results.write_atomic(root / "cpu" / f"r{index}.json", data)
    md = (build_report([root], tmp_path / "rep") / "report.md").read_text()
    section = md.split("## cpu\n")[1].split("\n## ")[0]
    assert "modernbert-base [host=a]" in section and "modernbert-base [host=b]" in section
    assert "kept the newest, 2026-11-03T00:00:00+00:00, over 2026-11-02T00:00:00+00:00" in md


def test_paper_and_rigorous_protocol_records_get_rows_of_their_own(tmp_path):
    base = next(r for r in results.read_records([ROOT / "results"]) if r.kind == "predicted"
                and r.identity.model == "bert-base" and r.device.basket_id == "T4")
    root = tmp_path / "res"
    for protocol, tps in (("rigorous", 1000.0), ("paper", 2000.0)):
        data = base.to_json()
        data["identity"] = data["identity"] | {"protocol": protocol}
        data["payload"] = data["payload"] | {"tokens_per_second": tps}
        results.write_atomic(root / "T4" / f"{protocol}.json", data)
    md = (build_report([root], tmp_path / "rep") / "report.md").read_text()
    assert "bert-base [protocol=paper]" in md and "bert-base [protocol=rigorous]" in md


def test_cuda_index_reaches_every_cuda_call(monkeypatch):
    """cuda:1 builds, runs, samples NVML and runs max-batch trials on GPU 1 (a fake device layer)."""
    from mbbench.bench import maxbatch, trial
    from mbbench.models import registry

    device = DeviceInfo("cuda", "NVIDIA H100 80GB HBM3", "H100-SXM", index=1, memory_bytes=80 * 10**9)
    plan = resolve(RunConfig("modernbert-base", "short-fixed", tiny=True, docs=2, passes=1, device="cuda:1"),
                   device=device)
    assert plan.torch_device == "cuda:1" and plan.identity.device_index == 1
    seen = {}
    real_build = registry.encoder

    def build(spec, options):
        seen["build"] = options.device
        return real_build(spec, registry.BuildOptions("cpu", options.dtype, options.backend))

    def passes(forward, batches, device, *args, **kwargs):
        seen["passes"] = str(device)
        return PassTimes([1.0], 0.0, 0.0, 1, 0)

    def ready(built, batches, progress=None, shared=None, gate=True):  # the engine's first call would need the device
        seen["prepare"] = built.model.torch_device
        info = EngineInfo("torch", "fake", built.model.torch_device, "fake", 1, 1, "none")
        return loading.LoadedModel(built, PreparedEngine(lambda batch: None, info), None)

    monkeypatch.setattr(registry, "encoder", build)
    monkeypatch.setattr(loading, "synchronize", lambda device: None)  # no GPU 1 to wait for
    monkeypatch.setattr(runner, "measure_passes", passes)
    monkeypatch.setattr(loading, "ready", ready)
    monkeypatch.setattr(runner.torch.cuda, "max_memory_allocated", lambda device: seen.setdefault("peak", str(device)))
    monkeypatch.setattr(runner.torch.cuda, "reset_peak_memory_stats", lambda device: seen.setdefault("reset", str(device)))
    monkeypatch.setattr(runner.environment, "nvml_gpu_reader", lambda index: seen.setdefault("load", index) and None)
    import mbbench.bench.telemetry as telemetry

    monkeypatch.setattr(telemetry, "nvml_reader", lambda index: seen.setdefault("nvml", index) and None)
    record = runner.run(plan)
    assert seen == {"build": "cuda:1", "prepare": "cuda:1", "passes": "cuda:1", "peak": "cuda:1", "reset": "cuda:1",
                    "load": 1, "nvml": 1}
    assert record.device.index == 1
    # MFU from the performance model's FLOP counter over the H100's bf16 datasheet peak (989.4 TFLOP/s dense)
    assert record.payload.flops_per_pass > 0 and "H100" in record.payload.mfu_note
    assert record.payload.mfu == pytest.approx(record.payload.flops_per_pass / 1.0 / 989.4e12, rel=1e-3)

    trials = []
    monkeypatch.setattr(trial, "subprocess_probe", lambda spec: trials.append(spec.device) or
                        (lambda size: maxbatch.Trial(size, "ok" if size <= 4 else "oom")))
    search_plan = resolve(RunConfig("modernbert-base", "short-fixed", tiny=True, device="cuda:1"), "max_batch",
                          device=device, limits=plan_module.max_batch_limits())
    found = runner.max_batch(search_plan)
    assert trials == ["cuda:1"] and found.payload.max_batch_size == 4


def test_detect_keeps_the_index_and_refuses_bad_devices(monkeypatch):
    from mbbench.errors import UserError
    from mbbench import device as gpus

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: types.SimpleNamespace(
        name="NVIDIA H200", multi_processor_count=132, major=9, minor=0, total_memory=150_754_820_096, uuid=None))
    monkeypatch.setattr(gpus, "_nvml_info", lambda index: {})
    found = gpus.detect("cuda:1")
    assert found.index == 1 and found.basket_id == "H200-SXM" and gpus.torch_device(found) == "cuda:1"
    assert found.memory_bytes == 150_754_820_096  # bytes, as the device reports them
    for bad, message in (("cuda:2", "sees 2 CUDA GPUs"), ("tpu", "unknown device .tpu.")):
        with pytest.raises(UserError, match=message):
            gpus.detect(bad)


def test_a_failed_configuration_in_run_is_recorded_and_the_next_model_runs(tmp_path):
    from mbbench.models import registry

    broken = tmp_path / "broken"
    registry.model_config(registry.get_spec("bert-base", tiny=True)).save_pretrained(broken)  # the row's config
    (broken / "model.safetensors").write_bytes(b"garbage")  # so only loading the weights fails
    out = tmp_path / "res"
    result = invoke("run", "--model", "bert-base", "--tiny", "--device", "cpu", "--docs", "2", "--runs", "1",
                    "--suite", "short-fixed", "--weights", broken, "--out", out, "--quiet")
    assert result.exit_code == 1 and "failed" in result.output
    [path] = record_files(out)
    record = Record.from_json(json.loads(path.read_text()))
    assert record.status == "failed" and record.payload.error_type and record.reason


def test_predict_refuses_what_it_cannot_model(tmp_path):
    for args, message in ((["run", "--predict", "--gpu", "t4", "--compile"], "--compile"),
                          (["run", "--predict", "--gpu", "t4", "--runs", "3"], "--runs"),
                          (["predict", "--gpu", "t4", "--dtype", "bfloat16"], "no bfloat16"),
                          (["predict", "--gpu", "t4", "--compile"], "No such option '--compile'")):
        result = invoke(*args, "--out", tmp_path)
        assert result.exit_code == 2 and message in result.output, (args, result.output)
    assert not record_files(tmp_path)
    ok = invoke("predict", "--gpu", "t4", "--model", "bert-base", "--suite", "short-fixed", "--out", tmp_path)
    assert ok.exit_code == 0, ok.output
    [path] = record_files(tmp_path)
    record = Record.from_json(json.loads(path.read_text()))
    assert record.identity.dtype == "float16" and "no bfloat16 tensor cores" in record.payload.notes[0]


def test_conflicting_batch_options_are_refused(tmp_path):
    result = invoke(*TINY_RUN, "--batch-size", "4", "--token-budget", "4096", "--out", tmp_path)
    assert result.exit_code == 2 and "--batch-size and --token-budget" in result.output
    small = invoke(*TINY_RUN, "--token-budget", "100", "--out", tmp_path)
    assert small.exit_code == 2 and "smaller than the longest document" in small.output


def test_ctrl_c_exits_130_and_names_the_records_written(tmp_path, monkeypatch):
    real = runner.run
    calls = []

    def interrupted(plan, *args, **kwargs):
        calls.append(plan.config.model)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(plan, *args, **kwargs)

    monkeypatch.setattr(runner, "run", interrupted)
    out = tmp_path / "res"
    result = invoke(*TINY_RUN, "--model", "bert-base", "--suite", "short-fixed", "--docs", "2", "--out", out)
    assert result.exit_code == 130
    [path] = record_files(out)
    assert "interrupted: 1 record(s) written" in result.output and str(path) in result.output


def test_max_batch_is_refused_on_a_cpu(tmp_path):
    result = invoke("max-batch", "--device", "cpu", "--tiny", "--out", tmp_path)
    assert result.exit_code == 2 and "GPU memory" in result.output


def test_no_kind_dispatch_outside_the_models_package():
    offenders = [str(p) for p in (ROOT / "mbbench").rglob("*.py")
                 if "models" not in p.parts and "spec.kind ==" in p.read_text()]
    assert offenders == [] and len((ROOT / "mbbench" / "cli.py").read_text().splitlines()) < 300


def test_predict_takes_the_backend_as_an_input(tmp_path):
    values = {}
    for backend in ("eager", "varlen"):
        result = invoke("predict", "--gpu", "h100", "--model", "modernbert-base", "--suite", "long-fixed",
                        "--backend", backend, "--out", tmp_path / backend)
        assert result.exit_code == 0, result.output
        [path] = record_files(tmp_path / backend)
        record = Record.from_json(json.loads(path.read_text()))
        assert record.payload.attention == backend and record.identity.backend == backend
        values[backend] = record.payload.tokens_per_second
    assert values["varlen"] > 1.5 * values["eager"]  # materialised 8192² fp32 scores cost far more than a kernel


def test_a_first_run_writes_to_runs_and_leaves_the_reference_records_alone(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("run", "--model", "modernbert-base", "--tiny", "--device", "cpu", "--docs", "2", "--runs", "1",
                    "--quiet")
    assert result.exit_code == 0, result.output
    assert len(record_files(tmp_path / "runs")) == 1 and not (tmp_path / "results").exists()


def test_the_run_table_says_what_was_measured_and_a_busy_machine_is_flagged(tmp_path, monkeypatch):
    from mbbench import environment

    busy = environment.LoadSnapshot(time_seconds=0.0, load_average_1m=9.0, load_average_5m=9.0, cpu_count=2,
                                    gpu_utilization_percent=None, other_gpu_processes=None,
                                    machine_busy_cpu_seconds=None, process_cpu_seconds=0.0)
    monkeypatch.setattr(environment, "load_snapshot", lambda *args, **kwargs: busy)
    result = CliRunner().invoke(cli, ["run", "--model", "modernbert-base", "--tiny", "--device", "cpu", "--docs", "3",
                                      "--runs", "2", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    header = next(line for line in result.output.splitlines() if line.startswith("model"))
    for column in ("device", "protocol", "docs", "batches", "passes", "statistic", "tokens_per_second",
                   "iqr/median", "status"):
        assert column in header, column
    assert "rigorous" in result.output and "median" in result.output and "record: " in result.output
    [path] = record_files(tmp_path)
    record = Record.from_json(json.loads(path.read_text()))
    assert "machine was busy" in record.payload.load.warning and "machine was busy" in result.output
    assert record.payload.load.start.load_average_1m == 9.0


def test_the_float32_matmul_precision_is_part_of_the_identity(monkeypatch):
    """Issue 26 ("look for others of this kind"): TF32 changes fp32 numbers and speed, yet shared a key."""
    config = RunConfig("modernbert-base", "short-fixed", device="cpu", tiny=True)
    default = resolve(config).identity
    assert default.matmul_precision == "highest" and "matmul_precision" not in default._hashed()  # old keys stay
    previous = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("high")
        tf32 = resolve(config).identity
        assert tf32.matmul_precision == "high" and tf32.key() != default.key()
        monkeypatch.setenv("NVIDIA_TF32_OVERRIDE", "0")
        assert resolve(config).identity.key() == default.key()
    finally:
        torch.set_float32_matmul_precision(previous)
