"""The GPU-session steps that no single `mbbench` command covers: environment, matmul twin, API smoke test, and
the engines compare (whose sides depend on what is installed there).

Run by `scripts/gpu_run.py` (one fresh process per step), each with a CPU twin for the rehearsal:
    python3 scripts/gpu_steps.py environment --device cuda --out DIR/environment.json
    python3 scripts/gpu_steps.py matmul --device cpu --dtype float32 --n 512 --out DIR/matmul_peak.json
    python3 scripts/gpu_steps.py smoke --device cuda --out DIR/smoke.json
    python3 scripts/gpu_steps.py engines --device cuda --out DIR/engines.json --results DIR/results
    python3 scripts/gpu_steps.py predictions --results DIR/results --predictions results --out DIR/predictions.json
Each writes one JSON file and prints one line (predictions: one per measured configuration). Exit status 1
when a smoke check fails; a step's exceptions propagate (exit status 1, traceback in the step's log).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import torch


def write_json(path: str, data: dict) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(data, indent=2, default=str))


# --------------------------------------------------------------------------------------------- environment

def environment(device: str, out: str) -> None:
    """The machine as found: device, software, backends that can run, nvidia-smi clocks and memory."""
    from dataclasses import asdict

    from mbbench import environment as env
    from mbbench.device import detect
    from mbbench.models.attention import availability_table

    local = detect(device)
    dtype = torch.bfloat16 if local.kind == "cuda" else torch.float32
    smi = shutil.which("nvidia-smi")
    info = {"device": asdict(local), "environment": env.capture(), "python": sys.executable,
            "torch_cuda": torch.version.cuda, "backends": {name: {"ok": a.ok, "reason": a.reason}
                                                          for name, a in availability_table(local.kind, dtype)},
            "nvidia_smi": subprocess.run([smi, "-q", "-d", "CLOCK,MEMORY"], capture_output=True, text=True,
                                         timeout=20).stdout if smi else None}
    write_json(out, info)
    ok = [name for name, a in info["backends"].items() if a["ok"]]
    memory = f"{local.memory_bytes / 2**30:.1f} GiB" if local.memory_bytes else "memory not reported"
    print(f"{local.name} ({local.kind}, {memory}); torch {torch.__version__}; backends: {', '.join(ok)}")


# --------------------------------------------------------------------------------------------------- matmul

def matmul(device: str, dtype: str, n: int, out: str) -> None:
    """The matmul peak of `mbbench.bench.matmul` with a device and dtype (its CLI is CUDA bf16 only)."""
    from mbbench.bench.matmul import matmul_peak
    from mbbench.dtypes import parse_dtype

    result = matmul_peak(n, parse_dtype(dtype), warmup=3, repeats=10, device=device)
    write_json(out, result | {"device": device})
    print(f"{dtype} matmul {n}^3 on {device}: {result['tflops_median']:.3f} TFLOP/s median")


# ---------------------------------------------------------------------------------------------------- smoke

def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref|| / ||ref|| in float64 (NaN stays NaN, so it never passes a bound)."""
    return ((out.double() - ref.double()).norm() / ref.double().norm()).item()


def check_attention(device: str) -> list[dict]:
    """The fast packed backend (varlen on CUDA in bf16; sdpa on CPU in fp32) against eager attention in fp32
    on the same inputs, global and ±64 window, on mbbench's packed layout (documents of 300, 257, 131, 40)."""
    from mbbench.models.attention import EagerAttention, get_backend, packed_layout

    cuda = device.startswith("cuda")
    name, dtype, bound = ("varlen", torch.bfloat16, 1e-2) if cuda else ("sdpa", torch.float32, 1e-5)
    lengths = [300, 257, 131, 40]
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=device)
    layout = packed_layout(cu, max(lengths), sum(lengths))
    generator = torch.Generator(device=device).manual_seed(0)
    q, k, v = (torch.randn(sum(lengths), 12, 64, device=device, generator=generator).to(dtype) for _ in range(3))
    backend, eager = get_backend(name, device, dtype), EagerAttention()
    checks = []
    for window in (None, 64):
        out = backend.attend(q, k, v, layout, backend.prepare(layout, {window}), window, 64 ** -0.5)
        ref = eager.attend(q.float(), k.float(), v.float(), layout, eager.prepare(layout, {window}), window,
                           64 ** -0.5)
        error = relative_error(out, ref)
        checks.append({"name": f"{name}-vs-eager-window-{window or 'global'}", "passed": error <= bound,
                       "value": error, "bound": bound, "detail": f"{name} {dtype} vs eager fp32, rel. L2 error"})
    return checks


def check_oom(device: str) -> list[dict]:
    """CUDA: a 1 GiB allocator cap makes a 2 GiB allocation raise the typed OOM, which `is_oom` accepts.
    CPU twin: every injected OOM form (typed, CUDA error, cuBLAS) comes back from a trial as "oom"."""
    from mbbench.errors import is_oom
    from mbbench.bench.trial import FAKE_OOMS, TrialSpec
    from mbbench.max_batch_trial import run_trial

    if device.startswith("cuda"):
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(2**30 / total, 0)
        try:
            torch.empty(2 * 2**30, dtype=torch.uint8, device=device)
            raised = "nothing"
        except Exception as error:  # noqa: BLE001 - the check is which error it is
            raised = f"{type(error).__name__}" + (" (is_oom)" if is_oom(error) else "")
        finally:
            torch.cuda.set_per_process_memory_fraction(1.0, 0)
            torch.cuda.empty_cache()
        return [{"name": "memory-cap-raises-typed-oom", "passed": raised == "OutOfMemoryError (is_oom)",
                 "value": raised, "bound": "OutOfMemoryError (is_oom)", "detail": "1 GiB cap, 2 GiB allocation"}]
    answers = {style: run_trial(TrialSpec("modernbert-base", "short-fixed", "float32", "auto", "cpu", "batch",
                                          tiny=True, fake_limit_tokens=512, fake_oom=style), 2)["status"]
               for style in FAKE_OOMS}
    return [{"name": "fake-oom-forms-are-oom", "passed": set(answers.values()) == {"oom"}, "value": answers,
             "bound": "oom", "detail": "CPU twin of the memory cap: injected OOMs in a trial"}]


def check_timing(device: str) -> list[dict]:
    """After warmup, four products take about four times one: CUDA events (median of 5) on GPU, judged there.
    On CPU (the rehearsal) the ratio is measured with perf_counter (minimum of 7) and reported, never judged: a
    shared CPU's load moves it (10x was seen on a busy 2-core machine), and no test may fail on a timing."""
    from statistics import median

    from mbbench.bench.timing import timed

    cuda = device.startswith("cuda")
    n, low, high, pick = (4096, 2.5, 6.0, median) if cuda else (512, 2.0, 8.0, min)
    a = torch.randn(n, n, device=device)
    one, four = (lambda: a @ a), (lambda: [a @ a for _ in range(4)])
    for _ in range(3):  # warmup: cuBLAS handle, kernel selection, clocks
        one(), four()
    dev, repeats = torch.device(device), 5 if cuda else 7
    ratio = pick([timed(four, dev) for _ in range(repeats)]) / pick([timed(one, dev) for _ in range(repeats)])
    return [{"name": "warm-event-timing-4x", "passed": low < ratio < high if cuda else True, "judged": cuda,
             "value": ratio, "bound": [low, high] if cuda else "reported only on CPU",
             "detail": f"{n}^3 fp32 matmul, {pick.__name__} of {repeats}, after 3 warmups"}]


def smoke(device: str, out: str) -> int:
    checks = check_attention(device) + check_oom(device) + check_timing(device)
    write_json(out, {"device": device, "checks": checks, "passed": all(c["passed"] for c in checks)})
    for c in checks:
        verdict = ("pass" if c["passed"] else "FAIL") if c.get("judged", True) else "info"
        print(f"{verdict}  {c['name']}: {c['value']} (bound {c['bound']})")
    return 0 if all(c["passed"] for c in checks) else 1


# -------------------------------------------------------------------------------------------------- engines

ENGINES_MODEL = "hf-modernbert-base"  # the exporting engines take padded (transformers) models only


ENGINE_SIDES = [ENGINES_MODEL, f"{ENGINES_MODEL}@torch-compile", f"{ENGINES_MODEL}@onnxruntime"]


def engines(device: str, out: str, results: str, tiny: bool) -> int:
    """`mbbench compare` of torch, torch-compile and onnxruntime on a short suite in half precision: fp16 on a GPU,
    bf16 on the CPU (the rehearsal of the GPU's half-precision accuracy gate). Each side is judged against the fp32
    function first; a side that cannot run here (onnxruntime without its CUDA provider, or in bf16) is left out by
    compare with its reason, the others compared."""
    cuda = device.startswith("cuda")
    dtype = "float16" if cuda else "bfloat16"
    work = ["--docs", "128", "--runs", "3"] if cuda else ["--tiny", "--docs", "4", "--runs", "2"]
    argv = [sys.executable, "-m", "mbbench.cli", "compare", *(a for side in ENGINE_SIDES for a in ("--model", side)),
            "--baseline", ENGINES_MODEL, "--suite", "short-variable", "--device", device, "--dtype", dtype, *work,
            "--out", results, "--quiet"]
    done = subprocess.run(argv, capture_output=True, text=True)
    print(done.stdout + done.stderr, end="")
    write_json(out, {"device": device, "dtype": dtype, "sides": ENGINE_SIDES, "command": argv,
                     "exit_status": done.returncode})
    print(f"engines ({dtype}): {', '.join(ENGINE_SIDES)} asked for (exit {done.returncode}; the record says which "
          "were left out and why)")
    return done.returncode


# ---------------------------------------------------------------------------------------------- predictions

def predictions(results: str, committed: str, out: str) -> int:
    """The session's measured throughput against the predictions committed under `committed` before it ran
    (`mbbench.prediction_check`): one line each, and the table as JSON. Information, never a failure."""
    from dataclasses import asdict

    from mbbench import prediction_check
    from mbbench.results import read_records

    measured = read_records([Path(results)]) if Path(results).is_dir() else []
    predicted = read_records([Path(committed)]) if Path(committed).is_dir() else []
    checks = prediction_check.check(measured, predicted)
    write_json(out, {"committed": committed, "checks": [asdict(c) | {"error": c.error, "inside": c.inside}
                                                        for c in checks]})
    for c in checks:
        print(c.line())
    matched = [c for c in checks if c.predicted is not None]
    print(f"predictions: {len(matched)} of {len(checks)} measured configurations had a committed prediction"
          + (f", {sum(bool(c.inside) for c in matched)} inside their band" if matched else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("environment", "smoke", "matmul", "engines"):
        p = sub.add_parser(name)
        p.add_argument("--device", default="cuda")
        p.add_argument("--out", required=True)
        if name == "matmul":
            p.add_argument("--dtype", default="bfloat16")
            p.add_argument("--n", type=int, default=8192)
        if name == "engines":
            p.add_argument("--results", required=True, help="where the comparison record goes (OUT/<device>/)")
            p.add_argument("--tiny", action="store_true", help="tiny models (the CPU rehearsal)")
    check = sub.add_parser("predictions")
    check.add_argument("--results", required=True, help="the session's records (OUT/<device>/*.json)")
    check.add_argument("--predictions", default="results", help="the committed predicted records")
    check.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if args.command == "predictions":
        return predictions(args.results, args.predictions, args.out)
    if args.command == "environment":
        environment(args.device, args.out)
    elif args.command == "matmul":
        matmul(args.device, args.dtype, args.n, args.out)
    elif args.command == "engines":
        return engines(args.device, args.out, args.results, args.tiny)
    else:
        return smoke(args.device, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
