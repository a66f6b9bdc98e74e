"""The element-wise kernels (`models.elementwise`): Inductor's fused RoPE equals eager bit for bit and its gated
activations equal eager within fp32 rounding, the model runs on either, and a run records which ran and why."""

import json

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from mbbench import loading
from mbbench.bench import elementwise as bench_elementwise
from mbbench.bench import kernel_choice
from mbbench.bench.kernel_store import CACHED, MEASURED
from mbbench.cli import cli
from mbbench.models import elementwise as kernels
from mbbench.models.config import preset
from mbbench.models.modernbert import RotaryTables, build
from mbbench.plan import RunConfig, resolve

needs_inductor = pytest.mark.skipif(kernels.inductor_refusal() is not None, reason=str(kernels.inductor_refusal()))


def rotary_inputs(tokens: int, dtype: torch.dtype, heads: int = 4, head_dim: int = 16):
    generator = torch.Generator().manual_seed(tokens)
    qkv = torch.randn(tokens, 3, heads, head_dim, generator=generator).to(dtype)  # as the QKV GEMM's view
    positions = torch.randint(0, 8192, (tokens,), generator=generator)
    cos, sin = RotaryTables(head_dim, 160_000.0, 8192)(positions, dtype)
    return qkv[:, :2], cos, sin


@needs_inductor
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_rotary_equals_eager_bit_for_bit_at_every_token_count(dtype):
    ops = kernels.operations(kernels.INDUCTOR)
    for tokens in (300, 37, 1, 0):  # one compiled kernel (dynamic tokens); 0 and 1 run eagerly
        x, cos, sin = rotary_inputs(tokens, dtype)
        with torch.inference_mode():
            eager, compiled = kernels.apply_rotary(x, cos, sin), ops.rotary(x, cos, sin)
        assert compiled.dtype == dtype and compiled.shape == x.shape
        assert torch.equal(compiled, eager), (tokens, (compiled.float() - eager.float()).abs().max())


def test_rotary_formula_is_transformers_rotation():
    x, cos, sin = rotary_inputs(50, torch.float32)
    rotated = torch.cat([-x[..., 8:], x[..., :8]], dim=-1)
    expected = x * torch.cat([cos, cos], dim=-1) + rotated * torch.cat([sin, sin], dim=-1)
    assert torch.equal(kernels.rotary_formula(x, cos, sin), expected)


@needs_inductor
@pytest.mark.parametrize("activation, reference", [("gelu", lambda a, b: F.gelu(a) * b),
                                                   ("silu", lambda a, b: F.silu(a) * b)])
def test_fused_gated_activations_equal_eager(activation, reference):
    """Bit-equal at ModernBERT-base's width (1152, whole AVX-512 vectors); at other widths Inductor's vectorised
    erf/exp may differ from ATen's in the last bits (measured: at most 4.8e-7 on values of order 1)."""
    ops = kernels.operations(kernels.INDUCTOR)
    run = ops.gelu_gated if activation == "gelu" else ops.silu_gated
    for width in (1152, 48):
        h = torch.randn(257, 2 * width, generator=torch.Generator().manual_seed(2))
        with torch.inference_mode():
            out = run(h)
        expected = reference(h[:, :width], h[:, width:])
        assert out.shape == (257, width)
        if width == 1152:
            assert torch.equal(out, expected)
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)
    # bf16: eager rounds the activation to bf16 before the product, and so does Inductor (emulated casts)
    h = torch.randn(257, 2 * 1152, generator=torch.Generator().manual_seed(3)).bfloat16()
    with torch.inference_mode():
        out = run(h)
    assert out.dtype == torch.bfloat16 and torch.equal(out, reference(h[:, :1152], h[:, 1152:]))


@needs_inductor
def test_model_on_inductor_equals_eager_and_use_counts_its_sites():
    model = build(preset("tiny"), backend="sdpa", seed=4)
    ids, cu = torch.randint(0, 512, (260,), generator=torch.Generator().manual_seed(5)), torch.tensor([0, 200, 260])
    with torch.inference_mode():
        eager = model(ids, cu_seqlens=cu.int(), max_seqlen=200)
        assert kernels.use(model, kernels.INDUCTOR) == 2 * 4  # attention and MLP of each of 4 layers
        compiled = model(ids, cu_seqlens=cu.int(), max_seqlen=200)
        kernels.use(model, kernels.EAGER)
        again = model(ids, cu_seqlens=cu.int(), max_seqlen=200)
    assert torch.equal(compiled, eager) and torch.equal(again, eager)
    with pytest.raises(ValueError, match="unknown element-wise kernel"):
        kernels.use(model, "triton")


@needs_inductor
def test_elementwise_times_rank_both_kernels_and_say_how():
    times = bench_elementwise.elementwise_times(4, 16, 48, "gelu", torch.float32, torch.get_num_threads(),
                                                tokens=64, rounds=3)
    assert times.error is None and (times.tokens, times.rounds) == (64, 3)
    assert sorted(k for k, _ in times.seconds) == [kernels.EAGER, kernels.INDUCTOR]
    assert all(0 < s < float("inf") for _, s in times.seconds)  # measured, finite (no speed is asserted)
    assert {k: len(s) for k, s in times.round_seconds} == {kernels.EAGER: 3, kernels.INDUCTOR: 3}  # paired rounds kept
    first, second = times.seconds
    assert times.describe().startswith(f"{first[0]} {first[1] * 1e3:.2f} ms vs {second[0]} ")
    assert "64 tokens" in times.describe() and "best of 3 interleaved rounds" in times.describe()
    with pytest.raises(ValueError, match="threads"):
        bench_elementwise.elementwise_times(4, 16, 48, "gelu", torch.float32, torch.get_num_threads() + 1)


@needs_inductor
def test_the_kernels_measured_are_the_ones_the_model_calls():
    """The measurement compiles in the model's state (inference tensors, the tables' layout), so the model's
    first batch recompiles nothing: no compile lands in its cold call. So does a cache hit (`compile_fused`)."""
    cfg = preset("tiny")
    model = build(cfg, backend="sdpa", seed=4)
    kernels.use(model, kernels.INDUCTOR)
    bench_elementwise.compile_fused(cfg.num_heads, cfg.head_dim, cfg.intermediate_size, "gelu", torch.float32)
    ids, cu = torch.randint(0, 512, (260,), generator=torch.Generator().manual_seed(5)), torch.tensor([0, 200, 260])
    with torch.inference_mode(), torch._dynamo.config.patch(error_on_recompile=True):
        model(ids, cu_seqlens=cu.int(), max_seqlen=200)


def test_elementwise_times_fall_back_to_eager_when_inductor_fails(monkeypatch):
    def broken(kernel):
        if kernel == kernels.INDUCTOR:
            raise RuntimeError("InductorError: CppCompileError: no C++ compiler")
        return kernels.EAGER_OPS

    monkeypatch.setattr(bench_elementwise, "operations", broken)
    times = bench_elementwise.measure_elementwise(4, 16, 48, "gelu", torch.float32, torch.get_num_threads(),
                                                  tokens=8, rounds=1)
    assert times.best == kernels.EAGER and times.compile_seconds is None
    assert "no C++ compiler" in times.describe() and times.describe().endswith("eager ATen")


def plan_for(model: str, **options):
    return resolve(RunConfig(model=model, suite="short-fixed", device="cpu", tiny=True, **options)).model_plan


def test_elementwise_choice_is_measured_only_for_our_models_on_the_torch_engine():
    ours = plan_for("modernbert-base")
    times = loading.cpu_elementwise_times(ours)
    assert times is not None
    choice = loading.elementwise_choice(ours, times)
    assert choice == kernel_choice.elementwise(times, kernels.EAGER) and choice.source in (MEASURED, CACHED)
    hf = plan_for("hf-modernbert-base")
    assert loading.cpu_elementwise_times(hf) is None
    assert loading.elementwise_choice(hf, None).kernel == kernels.EAGER
    compiled = plan_for("modernbert-base", engine="torch-compile")
    assert loading.cpu_elementwise_times(compiled) is None
    choice = loading.elementwise_choice(compiled, None)
    assert choice.kernel == kernels.EAGER and choice.source == kernel_choice.FIXED
    assert "torch-compile engine runs its own graph" in choice.reason
    pinned = plan_for("modernbert-base", elementwise=kernels.EAGER)
    assert loading.cpu_elementwise_times(pinned) is None  # a pin measures nothing
    assert loading.elementwise_choice(pinned, None) == kernel_choice.KernelChoice(kernels.EAGER, "pinned",
                                                                                 "--elementwise eager")


def test_run_records_the_elementwise_kernel_and_why(tmp_path):
    out = tmp_path / "res"
    result = CliRunner().invoke(cli, ["run", "--suite", "short-variable", "--model", "modernbert-base", "--tiny",
                                      "--device", "cpu", "--docs", "4", "--runs", "1", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    [path] = out.rglob("*.json")
    payload = json.loads(path.read_text())["payload"]["build"]
    assert payload["elementwise"] in kernels.KERNELS
    reason = payload["elementwise_reason"]
    assert payload["elementwise_source"] in (MEASURED, CACHED) and reason.startswith(payload["elementwise_source"])
    if kernels.inductor_refusal() is None:  # the verdict, then both kernels' times
        assert "eager's speed" in reason and " ms vs " in reason
    else:
        assert payload["elementwise"] == kernels.EAGER and kernels.inductor_refusal() in reason


def refusal_under(env: dict, *args: str) -> "subprocess.CompletedProcess":
    """`inductor_refusal()` (or an `mbbench` command) in a fresh process with `env` (Inductor reads $CXX when
    torch imports its config: a process of its own sees the variable as a user's shell would pass it)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = str(Path(__file__).resolve().parent.parent)
    code = ["-c", "from mbbench.models.elementwise import inductor_refusal; print(inductor_refusal())"] if not args else \
        ["-m", "mbbench.cli", *args]
    return subprocess.run([sys.executable, *code], env={**os.environ, "PYTHONPATH": root, **env}, cwd=root,
                          capture_output=True, text=True, timeout=300)


@needs_inductor
def test_the_compiler_check_is_inductors_own_lookup(tmp_path):
    """Issue 34 item 15: the check looked for g++/c++ on PATH while Inductor takes $CXX (then g++): a bad $CXX
    passed the check and failed after the model was built; a working $CXX without g++ was refused."""
    import shutil

    bad = refusal_under({"CXX": "/nonexistent/c++"})
    assert bad.returncode == 0 and "tried /nonexistent/c++" in bad.stdout, bad.stderr
    refused = refusal_under({"CXX": "/nonexistent/c++"}, "run", "--tiny", "--device", "cpu", "--docs", "2", "--runs",
                            "1", "--engine", "torch-compile", "--out", str(tmp_path / "out"))
    assert refused.returncode == 2 and "tried /nonexistent/c++" in refused.stderr + refused.stdout
    assert not list(tmp_path.rglob("*.json"))  # refused when planned: no model built, no record
    only = tmp_path / "bin"  # a PATH with no g++ or c++, and $CXX naming a compiler that runs
    only.mkdir()
    (only / "my-cxx").symlink_to(shutil.which("g++") or shutil.which("c++"))
    good = refusal_under({"CXX": str(only / "my-cxx"), "PATH": str(only)})
    assert good.returncode == 0 and good.stdout.strip() == "None", good.stdout + good.stderr
