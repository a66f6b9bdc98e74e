"""Interleaved CPU ratio of host allocator settings, end to end (issue 36 item 7): one worker process per setting,
the same model and batches in each, passes in rotating order so a busy moment hits every setting alike.

An allocator is chosen when a process starts (LD_PRELOAD, glibc's thresholds before the first large block), so the
settings cannot share one process: each runs in its own worker, built once, and the driver asks one worker at a
time for one timed pass (the others wait on their pipe, idle). Settings: `system` (glibc as found),
`large-heap` (mbbench's default, `mbbench.allocator`), and jemalloc / tcmalloc when their libraries are installed
(Debian: libjemalloc2, libtcmalloc-minimal4). Prints each setting's median tokens/s, minor page faults per pass,
and the paired median ratio over `system` with its order-statistic interval; writes JSON with `--out`.

    PYTHONPATH=$PWD python scripts/compare_allocator.py --suite short-fixed --docs 16 --batch-size 16 --rounds 6 \\
        --threads 2 --out benchmarks/cpu/allocator__short-fixed__bs16__docs16__fp32.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from mbbench import allocator, environment, loading
from mbbench.bench.paired import median_interval, round_order
from mbbench.device import cpu_device
from mbbench.dtypes import parse_dtype
from mbbench.files import write_json
from mbbench.plan import RunConfig, resolve
from mbbench.suites import make_batches, select_documents

LIBRARIES = {"jemalloc": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
             "tcmalloc": "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"}


def settings() -> dict[str, dict[str, str]]:
    """Setting name -> the environment its worker starts with."""
    found = {"system": {allocator.ENVIRONMENT_VARIABLE: allocator.SYSTEM},
             "large-heap": {allocator.ENVIRONMENT_VARIABLE: allocator.LARGE_HEAP}}
    for name, path in LIBRARIES.items():
        if Path(path).is_file():
            found[name] = {"LD_PRELOAD": path, allocator.ENVIRONMENT_VARIABLE: allocator.SYSTEM}
    return found


def worker(args: argparse.Namespace) -> None:
    """Build the model, warm up one pass, then time one pass per 'pass' line on stdin (prints seconds, faults)."""
    setting = allocator.configure()
    config = RunConfig(model=args.model, suite=args.suite, dtype=args.dtype, batch_size=args.batch_size,
                       docs=args.docs, threads=args.threads, device="cpu")
    plan = resolve(config)
    encoder = loading.build(plan.model_plan).encoder  # the plan's threads applied, its kernels chosen
    batches = make_batches(plan.suite, select_documents(plan.suite, plan.documents), encoder.layout,
                           plan.batch_size, None, encoder.pad_token_id)

    def one_pass() -> tuple[float, int]:
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        start = time.perf_counter()
        with torch.inference_mode():
            for batch in batches:
                encoder(batch)
        return time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults

    one_pass()  # warmup: the heap grows to its working size
    tokens = sum(b.real_tokens for b in batches)
    print(json.dumps({"ready": setting.describe(), "tokens": tokens, "gemm": encoder.gemm,
                      "elementwise": encoder.elementwise}), flush=True)
    for line in sys.stdin:
        if line.strip() != "pass":
            break
        seconds, faults = one_pass()
        print(json.dumps({"seconds": seconds, "faults": faults}), flush=True)


def start_workers(args: argparse.Namespace) -> dict[str, subprocess.Popen]:
    command = [sys.executable, __file__, "--worker", "--model", args.model, "--suite", args.suite, "--docs",
               str(args.docs), "--batch-size", str(args.batch_size), "--dtype", args.dtype, "--threads",
               str(args.threads)]
    workers = {}
    for name, env in settings().items():  # one at a time: building is CPU work too
        process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                   env={**os.environ, **env})
        ready = json.loads(process.stdout.readline())
        print(f"{name}: {ready['ready']} ({ready['tokens']} tokens per pass, GEMM {ready['gemm']})", flush=True)
        workers[name] = process
    return workers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", default="modernbert-base")
    parser.add_argument("--suite", default="short-fixed")
    parser.add_argument("--docs", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", help="write the result here (JSON)")
    args = parser.parse_args()
    parse_dtype(args.dtype)
    if args.worker:
        return worker(args)
    workers = start_workers(args)
    names = list(workers)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    faults: dict[str, list[int]] = {name: [] for name in names}
    for round_ in range(args.rounds):
        for name in round_order(names, round_):
            workers[name].stdin.write("pass\n")
            workers[name].stdin.flush()
            result = json.loads(workers[name].stdout.readline())
            seconds[name].append(result["seconds"])
            faults[name].append(result["faults"])
            print(f"round {round_ + 1}/{args.rounds} {name}: {result['seconds']:.2f} s, {result['faults']} faults",
                  flush=True)
    for process in workers.values():
        process.stdin.write("quit\n")
        process.stdin.close()
        process.wait()
    ratios = {name: [base / mine for base, mine in zip(seconds["system"], seconds[name])]
              for name in names if name != "system"}  # tokens/s over system's: >1 is faster
    summary = {}
    for name in names:
        line = f"{name}: median pass {statistics.median(seconds[name]):.2f} s, " \
               f"{statistics.median(faults[name]):.0f} faults per pass"
        if name in ratios:
            interval, median = median_interval(ratios[name]), statistics.median(ratios[name])
            summary[name] = {"median": median, "low": interval.low, "high": interval.high,
                             "confidence": interval.confidence}
            line += f"; / system = {median:.3f}x [{interval.low:.3f}, {interval.high:.3f}] " \
                    f"({interval.confidence:.1%} CI)"
        print(line)
    if args.out:
        cpu = cpu_device()
        write_json(args.out, {"what": "host allocator settings, end to end, interleaved worker processes",
                              "model": args.model, "suite": args.suite, "documents": args.docs,
                              "batch_size": args.batch_size, "dtype": args.dtype, "threads": args.threads,
                              "cpu": cpu.name, "cpu_isa": cpu.isa, "rounds": args.rounds, "pass_seconds": seconds,
                              "faults_per_pass": faults, "ratio_over_system": summary,
                              "environment": environment.capture("python scripts/compare_allocator.py")})
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
