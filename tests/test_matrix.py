"""`mbbench matrix`: expansion, resume, failures, and the Ray path on a local Ray instance (CPU only).

Ray stands in for a GPU cluster with custom `accelerator_type:<type>` resources, which is how Ray labels
nodes by GPU type; the tasks measure on the CPU.
"""

import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

import mbbench.plan as plan_module
from mbbench import matrix as mx
from mbbench.plan import resolve
from mbbench.records import Record
from mbbench.cli import cli
from mbbench.cluster import RayExecutor
from mbbench.errors import UserError
from mbbench.hardware.gpus import accelerator_type
from mbbench.models.registry import get_spec, model_config
from mbbench.records import DeviceInfo as LocalDevice

ROOT = Path(__file__).resolve().parent.parent
SMALL = {"docs": 2, "runs": 2, "tiny": True, "device": "cpu"}
# What may differ between two measurements of one configuration: timings, host, when, how it was run.
VOLATILE = {"created_at", "run_seconds", "warmup_seconds", "first_call_seconds", "compile_seconds",
            "tokens_per_second", "tokens_per_second_stats", "unstable", "telemetry", "path", "host", "git_commit",
            "load", "load_warning", "peak_memory_bytes", "cold_start_seconds", "engine_info",
            "mfu", "mfu_note", "gemm", "gemm_reason",  # measured: the CPU GEMM peak and the kernel it picks
            "elementwise", "elementwise_reason",  # measured likewise: the element-wise kernel
            "gemm_source", "elementwise_source"}  # where each choice came from: measured by one process, read by the next


def invoke(*args):
    return CliRunner().invoke(cli, list(args))


def spec(**axes):
    return mx.MatrixSpec(**{"models": ("modernbert-base", "bert-base"), "suites": ("short-variable",),
                            "options": dict(SMALL)} | axes)


def stable(record: Record) -> dict:
    """A record's flat row without what may differ (a typed part's columns `part.field` by either name)."""
    return {k: v for k, v in record.flatten().items() if not {k, k.split(".")[0], k.split(".")[-1]} & VOLATILE}


def record_files(root: Path) -> dict[str, float]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*.json")}


def broken_weights(tmp_path: Path) -> str:
    """A checkpoint directory whose weights file is garbage: loading it fails inside the task."""
    directory = tmp_path / "broken-checkpoint"
    directory.mkdir()
    model_config(get_spec("roberta-base", tiny=True)).save_pretrained(directory)  # the row's own config
    (directory / "model.safetensors").write_bytes(b"not a safetensors file")
    return str(directory)


def failing_task(tmp_path: Path, device_kind: str = "cpu", accelerator: str | None = None) -> mx.Task:
    [task], _ = mx.expand(replace(spec(models=("roberta-base",)), gpus=(accelerator,) if accelerator else ()),
                          device_kind)
    config = replace(task.config, weights=broken_weights(tmp_path))
    return replace(task, config=config, planned=mx.plan_unplaced(config, task.suite, device_kind, accelerator))


# ------------------------------------------------------------------------------------------- the matrix

def test_matrix_file_axes_options_and_overrides(tmp_path):
    path = tmp_path / "m.toml"
    path.write_text('models = ["modernbert-base", "bert-base"]\nsuites = ["short-variable", "long-fixed"]\n'
                    'backends = ["auto", "sdpa"]\ngpus = ["t4", "h100"]\n[options]\ndocs = 8\nruns = 3\n')
    data = mx.read_matrix_file(path)
    built = mx.build_spec(data, {"models": ("neobert",)}, {"runs": 5, "docs": None})
    assert built.models == ("neobert",)  # the command line wins where given
    assert built.suites == ("short-variable", "long-fixed") and built.gpus == ("t4", "h100")
    assert built.options == {"docs": 8, "runs": 5}

    for text, message in [('modelz = ["x"]', "unknown key 'modelz'"), ('models = "bert-base"', "list of strings"),
                          ('[options]\nruns = "ten"', "option 'runs' must be int"),
                          ('[options]\nbatch = 8', "unknown option(s) batch")]:
        path.write_text(text)
        with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
            mx.read_matrix_file(path)


def test_documented_example_matrix_expands():
    data = mx.read_matrix_file(ROOT / "docs" / "examples" / "basket-matrix.toml")
    tasks, notes = mx.expand(mx.build_spec(data, {}, {}), "cuda")
    assert len(tasks) == 4 * 4 * 6 and not notes
    assert {t.accelerator for t in tasks} == {"T4", "L4", "A10", "A100", "H100", "GeForce-RTX-4090"}


def test_expand_is_the_cross_product_less_what_a_model_cannot_run():
    tasks, notes = mx.expand(spec(suites=("short-variable", "long-fixed"), backends=("auto", "varlen"),
                                  gpus=("t4", "L4")), "cuda")
    # modernbert: 2 suites x 2 backends x 2 GPU types; bert-base has no "varlen" backend: 2 x 1 x 2
    assert len(tasks) == 8 + 4
    assert any("bert-base x backend varlen" in note for note in notes)
    assert {t.accelerator for t in tasks} == {"T4", "L4"}
    assert len({t.key for t in tasks}) == len(tasks)
    # planned for the GPU, not this CPU: the T4 has no bf16 tensor cores, so it runs fp16 as `predict` says
    assert {(t.accelerator, t.planned.dtype) for t in tasks} == {("T4", "float16"), ("L4", "bfloat16")}
    assert all(t.config.placement is None for t in tasks)  # a GPU record's gpu dir already says where it ran

    with pytest.raises(UserError, match="float33"):
        mx.expand(spec(dtypes=("float33",)), "cuda")

    # two names of one Ray GPU type are one task, not two records fighting over one file
    tasks, notes = mx.expand(spec(models=("bert-base",), gpus=("a100", "a100-80gb")), "cuda")
    assert len(tasks) == 1 and tasks[0].accelerator == "A100" and any("duplicate" in n for n in notes)

    # CPU tasks on different node types are different configurations (all CPU records live in results/cpu/)
    tasks, _ = mx.expand(spec(models=("bert-base",), gpus=("T4", "L4")), "cpu")
    assert sorted(t.planned.identity.placement for t in tasks) == ["L4", "T4"] and tasks[0].key != tasks[1].key


def test_gpu_types_map_to_ray_labels():
    assert accelerator_type("4090") == "GeForce-RTX-4090"
    assert accelerator_type("h100-pcie") == "H100" and accelerator_type("a100-80gb") == "A100"
    assert accelerator_type("A10G") == "A10G"  # not in the basket: passed to Ray as it is
    with pytest.raises(UserError):
        accelerator_type("no such gpu!")


def test_placement_check_refuses_a_node_with_another_gpu():
    [task], _ = mx.expand(spec(models=("bert-base",), gpus=("T4",)), "cuda")
    h100 = LocalDevice("cuda", "NVIDIA H100 80GB HBM3", "H100-SXM")
    with pytest.raises(UserError, match="asked for T4"):
        mx.check_placement(task, h100)
    mx.check_placement(task, LocalDevice("cuda", "Tesla T4", "T4"))
    with pytest.raises(UserError, match="needs a cuda device"):
        mx.check_placement(task, LocalDevice("cpu", "some cpu", None))


def test_ray_task_resources_and_infeasible_types():
    executor = RayExecutor(cpus_per_task=2)
    [gpu_task], _ = mx.expand(spec(models=("bert-base",), gpus=("T4",)), "cuda")
    options = executor.task_options(gpu_task)
    assert options["num_gpus"] == 1 and options["num_cpus"] == 2  # one whole GPU: never shared
    assert options["resources"] == {"accelerator_type:T4": 0.001}
    [cpu_task], _ = mx.expand(spec(models=("bert-base",), gpus=("T4",)), "cpu")
    on_node = executor.task_options(cpu_task, "node:10.0.0.7")
    assert on_node["num_gpus"] == 0 and on_node["resources"] == {"accelerator_type:T4": 0.001, "node:10.0.0.7": 1.0}
    nodes = {"node:10.0.0.7": {"CPU": 8.0, "accelerator_type:T4": 1.0}, "node:10.0.0.8": {"CPU": 8.0}}
    assert executor.nodes_for(cpu_task, nodes) == ["node:10.0.0.7"]  # its type's nodes only

    cluster = {"CPU": 32.0, "GPU": 4.0, "accelerator_type:L4": 1.0}
    assert "GPU type T4" in executor.infeasible(gpu_task, cluster) and "L4" in executor.infeasible(gpu_task, cluster)
    assert executor.infeasible(gpu_task, cluster | {"accelerator_type:T4": 1.0}) is None
    assert executor.infeasible(gpu_task, {"CPU": 8.0, "accelerator_type:T4": 1.0}) == "the Ray cluster has no GPUs"


# ---------------------------------------------------------------------------------------------- locally

def test_local_matrix_writes_one_record_each_resumes_and_records_failures(tmp_path):
    out = tmp_path / "results"
    tasks, _ = mx.expand(spec(suites=("short-variable", "short-fixed")), "cpu")
    tasks.append(failing_task(tmp_path))
    outcomes = mx.run_matrix(tasks, out, mx.LocalExecutor())

    assert len(outcomes) == 5 and len(record_files(out)) == 5
    by_model = {(o.record.flatten()["model"], o.record.identity.suite): o.record.flatten() for o in outcomes}
    failed = by_model[("roberta-base-tiny", "short-variable")]
    assert failed["status"] == "failed" and "cannot load it as RobertaModel" in failed["reason"]
    assert sum(o.status == "ok" for o in outcomes) == 4  # the failure stopped nothing else
    assert all(Record.from_json(json.loads(o.path.read_text())).identity.configuration_key() == o.task.key[1]
               for o in outcomes)  # the configuration the driver planned is the one the record got

    before = record_files(out)
    again = mx.run_matrix(tasks, out, mx.LocalExecutor())
    assert [o.state for o in again] == ["skipped"] * 5 and record_files(out) == before

    retried = mx.run_matrix(tasks, out, mx.LocalExecutor(), retry_failed=True)
    assert [o.task.config.model for o in retried if o.state == "ran"] == ["roberta-base"]
    forced = mx.run_matrix(tasks[:1], out, mx.LocalExecutor(), force=True)
    assert [o.state for o in forced] == ["ran"]


def test_matrix_command_runs_locally_and_resumes(tmp_path):
    out = tmp_path / "res"
    args = ["matrix", "--model", "bert-base", "--suite", "short-variable", "--tiny", "--docs", "2", "--runs", "2",
            "--device", "cpu", "--out", str(out), "--quiet"]
    first = invoke(*args)
    assert first.exit_code == 0, first.output
    assert "1 ran, 0 already recorded, 0 failed" in first.output
    second = invoke(*args)
    assert second.exit_code == 0 and "0 ran, 1 already recorded" in second.output

    elsewhere = invoke(*args, "--gpu", "T4")
    assert elsewhere.exit_code == 2 and "use --ray" in elsewhere.output
    nothing = invoke(*args, "--backend", "varlen")  # bert-base has no "varlen": nothing valid is left
    assert nothing.exit_code == 2 and "no configuration a model can run" in nothing.output


def test_unreachable_ray_address_fails_fast():
    import socket

    from mbbench.cluster import check_reachable

    with socket.socket() as listener:  # a port that was free a moment ago and now refuses connections
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
    for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
        with pytest.raises(UserError, match="cannot reach a Ray cluster"):
            check_reachable(address)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        check_reachable(f"127.0.0.1:{listener.getsockname()[1]}")  # someone listens: no error
    for address in ("auto", "local", None):  # Ray's own lookup, which fails fast by itself
        check_reachable(address)


def test_matrix_ray_without_ray_installed_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    result = invoke("matrix", "--model", "bert-base", "--suite", "short-variable", "--out", str(tmp_path), "--ray")
    assert result.exit_code == 2
    assert "pip install 'mbbench[ray]'" in result.output
    assert not list(tmp_path.rglob("*.json"))


# -------------------------------------------------------------------------------------------------- Ray

@pytest.fixture(scope="module")
def ray_cluster():
    import ray  # a dev dependency: the Ray path must be tested, never skipped
    # two "GPU types" as custom resources; workers import this checkout even when it is not installed
    ray.init(num_cpus=2, resources={"accelerator_type:T4": 1, "accelerator_type:L4": 1}, logging_level="ERROR",
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}}, include_dashboard=False)
    yield ray
    ray.shutdown()


def test_ray_records_equal_local_records(ray_cluster, tmp_path):
    tasks, _ = mx.expand(spec(), "cpu")
    local = mx.run_matrix(tasks, tmp_path / "local", mx.LocalExecutor())
    remote = mx.run_matrix(tasks, tmp_path / "ray", RayExecutor())

    assert len(record_files(tmp_path / "ray")) == len(tasks) == 2
    local_records = {o.task.key: o.record for o in local}
    for outcome in remote:
        assert outcome.record.status == "ok"
        assert outcome.record.execution["via"] == "ray" and outcome.record.execution["node_id"]
        assert stable(outcome.record) == stable(local_records[outcome.task.key])
    assert set(record_files(tmp_path / "ray")) == set(record_files(tmp_path / "local"))


def test_ray_matrix_places_by_type_records_failures_and_resumes(ray_cluster, tmp_path):
    out = tmp_path / "results"
    tasks, _ = mx.expand(spec(models=("bert-base",), gpus=("T4", "L4", "H100")), "cpu")
    tasks.append(failing_task(tmp_path, accelerator="T4"))
    outcomes = mx.run_matrix(tasks, out, RayExecutor())

    assert len(outcomes) == len(tasks) == 4 and len(record_files(out)) == 4
    status = {(o.task.config.model, o.task.accelerator): o.record.flatten() | {"execution": o.record.execution}
              for o in outcomes}
    for label in ("T4", "L4"):
        record = status[("bert-base", label)]
        assert record["status"] == "ok"
        assigned = record["execution"]["assigned_resources"]
        assert assigned[f"accelerator_type:{label}"] > 0  # on a node of its type ...
        assert [v for k, v in assigned.items() if k.startswith("node:")] == [1.0]  # ... which it had to itself
    missing = status[("bert-base", "H100")]
    assert missing["status"] == "failed" and "no node in the Ray cluster has GPU type H100" in missing["reason"]
    broken = status[("roberta-base", "T4")]
    assert broken["status"] == "failed" and "cannot load it as RobertaModel" in broken["reason"]

    before = record_files(out)
    again = mx.run_matrix(tasks, out, RayExecutor())
    assert {o.state for o in again} == {"skipped"} and record_files(out) == before


def test_matrix_command_on_ray_exits_1_while_failures_remain(ray_cluster, tmp_path):
    args = ["matrix", "--model", "bert-base", "--suite", "short-variable", "--tiny", "--docs", "2", "--runs", "2",
            "--device", "cpu", "--gpu", "T4", "--gpu", "H100", "--out", str(tmp_path), "--ray", "--quiet"]
    first = invoke(*args)
    assert first.exit_code == 1, first.output
    assert "2 ran, 0 already recorded, 1 failed" in first.output
    assert "no node in the Ray cluster has GPU type H100" in first.output
    again = invoke(*args)
    assert again.exit_code == 1 and "0 ran, 2 already recorded, 1 failed" in again.output


def test_out_of_memory_and_lost_nodes_become_failed_records(ray_cluster):
    import torch

    assert plan_module.describe(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore")) == \
        "out of memory: CUDA out of memory. Tried to allocate 2.00 GiB"
    [task], _ = mx.expand(spec(models=("bert-base",), gpus=("T4",)), "cuda")

    class LostNode:  # ray.get on the task of a node that died
        exceptions = ray_cluster.exceptions

        @staticmethod
        def get(ref):
            raise ray_cluster.exceptions.NodeDiedError("node 10.0.0.7 died (heartbeat timeout)")

    record = RayExecutor._collect(LostNode, None, task)
    assert record.status == "failed" and record.payload.error_type == "NodeDiedError"
    assert "heartbeat timeout" in record.reason
    assert record.device.directory == "T4" and record.identity.configuration_key() == task.key[1]


def test_a_cpu_task_reserves_the_threads_it_runs_and_a_node_of_its_own(ray_cluster, tmp_path):
    """Issue 34 item 14: each CPU task reserved 1 CPU and ran 2 threads, so four were measured at once on one node
    (roberta 6,494 tokens/s against 64,581 alone). Now a task reserves its threads and the node alone, and its
    record names any task measured on the host meanwhile (none here)."""
    tasks, _ = mx.expand(spec(models=("bert-base", "roberta-base"), options=dict(SMALL) | {"threads": 2}), "cpu")
    executor = RayExecutor(cpus_per_task=1)
    assert all(executor.task_options(t)["num_cpus"] == 2 for t in tasks)  # the threads, not --cpus-per-task's 1
    outcomes = mx.run_matrix(tasks, tmp_path, executor)
    spans = sorted((o.record.execution["started_at"], o.record.execution["started_at"] + o.record.execution["seconds"])
                   for o in outcomes)
    assert len(spans) == len(tasks) > 1 and all(o.record.status == "ok" for o in outcomes)
    assert all(later[0] >= earlier[1] - 0.01 for earlier, later in zip(spans, spans[1:]))  # one after another
    assert all(o.record.execution["overlapping"] == [] for o in outcomes)


def test_a_measurement_that_overlapped_another_on_its_host_says_so(tmp_path):
    log = tmp_path / "measurements.log"
    log.write_text("start\t1\t100.000\troberta-base / short-variable\nend\t1\t200.000\troberta-base / short-variable\n"
                   "start\t2\t300.000\tbert-base / short-variable\nend\t2\t400.000\tbert-base / short-variable\n")
    assert mx.overlapping(150.0, 250.0, log) == ["roberta-base / short-variable (process 1)"]
    assert mx.overlapping(200.5, 299.0, log) == []  # one after another: no overlap
    assert mx.overlapping(50.0, 500.0, log) == ["bert-base / short-variable (process 2)",
                                                 "roberta-base / short-variable (process 1)"]
