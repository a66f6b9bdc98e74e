"""Interleaved CPU ratio: the reference ModernBERT with Inductor's fused RoPE + GeGLU vs eager ATen (issue 25).

One process builds the model twice from the same seeded weights, on the same GEMM kernel (the one `run` picks
on this CPU), differing only in `models.elementwise` kernel, and times full passes over a suite's subsample in
rotating order (`bench.paired.run_paired`: AB, BA, ...), so a busy moment hits both. Prints each side's median
tokens/s and the paired median ratio inductor / eager with its order-statistic interval, and writes the result
as JSON (with the CPU's name and the commit) when `--out` is given.

    PYTHONPATH=$PWD python scripts/compare_elementwise.py --suite short-fixed --docs 16 --batch-size 16 \
        --rounds 6 --threads 2 --out benchmarks/cpu/elementwise-inductor-vs-eager__short-fixed__bs16__docs16.json
"""

from __future__ import annotations

import argparse

import torch

from mbbench import environment
from mbbench.bench.matmul import cpu_gemm_rates
from mbbench.bench.paired import run_paired
from mbbench.device import cpu_name
from mbbench.files import write_json
from mbbench.models import registry
from mbbench.models.elementwise import EAGER, INDUCTOR
from mbbench.suites import load_suite, make_batches, select_documents


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="modernbert-base")
    parser.add_argument("--suite", default="short-fixed")
    parser.add_argument("--docs", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", help="write the result here (JSON)")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    spec = registry.get_spec(args.model)
    shape = registry.shape_of(spec)
    rates = cpu_gemm_rates(tuple(shape.gemms().values()), torch.float32, args.threads)
    encoders = {kernel: registry.build_encoder(args.model, registry.BuildOptions(gemm=rates.best, elementwise=kernel))
                for kernel in (EAGER, INDUCTOR)}
    suite = load_suite(args.suite)
    indices = select_documents(suite, args.docs)
    batches = make_batches(suite, indices, "packed", args.batch_size, None, 0)
    with torch.inference_mode():
        outputs = [encoders[k](batches[0]) for k in (EAGER, INDUCTOR)]
    max_difference = (outputs[0] - outputs[1]).abs().max().item()
    result = run_paired({k: encoders[k] for k in (EAGER, INDUCTOR)}, batches, torch.device("cpu"), args.rounds,
                        baseline=EAGER,
                        on_pass=lambda name, r, s: print(f"round {r + 1}/{args.rounds} {name}: {s:.2f} s", flush=True))
    ratio = result.ratio(INDUCTOR)
    interval = ratio.interval
    medians = {k: m.summary().median for k, m in result.models.items()}
    print(f"{args.suite} ({len(indices)} documents, batch {args.batch_size}) on {cpu_name()}, {args.threads} threads, "
          f"GEMM {rates.best}: "
          f"eager {medians[EAGER]:.0f} tokens/s, inductor {medians[INDUCTOR]:.0f} tokens/s; inductor / eager = "
          f"{ratio.median:.3f}x" + (f" [{interval.low:.3f}, {interval.high:.3f}] ({interval.confidence:.1%} CI)"
                                    if interval else "") + f"; max |difference| {max_difference:.2e}")
    if args.out:
        write_json(args.out, {"what": "reference ModernBERT, fused (Inductor) vs eager RoPE + GeGLU, interleaved",
                              "model": args.model, "suite": args.suite, "documents": len(indices),
                              "batch_size": args.batch_size, "threads": args.threads, "gemm": rates.best,
                              "max_abs_difference": max_difference, "paired": result.to_dict(), "cpu": cpu_name(),
                              "environment": environment.capture("python scripts/compare_elementwise.py")})
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
