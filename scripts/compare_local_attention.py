"""Interleaved CPU ratios: mbbench's ModernBERT (backend from `choose_backend`) vs transformers' sdpa model.

Both models hold the same seeded base-config weights (transformers' twin is built as `mbbench verify`
builds it). For each workload the script runs one warmup forward of each model, then `--pairs` pairs
of timed forwards in alternating order (AB, BA, AB, ...), so drift on a shared machine hits both
equally. It prints, per workload, the speedup transformers_time / ours_time as a median with a
bootstrap 95% interval over the pairs, plus tokens/s of each. Ours runs packed (cu_seqlens), as the
runner feeds it; transformers runs the same documents right-padded with an attention mask.

`--mask-tokens N` first times the flex BlockMask build for N packed tokens (documents of 512) and
reports its tensor bytes and the process's peak-RSS growth (measured before any model exists).

Example (the run recorded in docs/benchmarking.md):
    PYTHONPATH=$PWD python scripts/compare_local_attention.py --pairs 5 --mask-tokens 131072
"""

from __future__ import annotations

import argparse
import random
import resource
import statistics
import time

import torch

from mbbench.batching import pack_documents, pad_documents
from mbbench.models.attention import (
    SdpaAttention, WindowedSdpaAttention, choose_backend, flex_block_mask, packed_layout,
)
from mbbench.models.config import preset
from mbbench.models.modernbert import build
from mbbench.verify import transformers_twin

WORKLOADS = {
    "1x4096": lambda gen: [4096],
    "1x8192": lambda gen: [8192],
    "32xN256": lambda gen: [int(x) for x in (torch.randn(32, generator=gen) * 64 + 256).round().clamp(32, 512)],
    "16x512": lambda gen: [512] * 16,
}


def bootstrap(values: list[float], rounds: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of the median of `values`, resampled with replacement."""
    rng = random.Random(seed)
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(rounds))
    return medians[int(0.025 * rounds)], medians[int(0.975 * rounds) - 1]


def time_once(fn) -> float:
    """Seconds of one call (CPU: no synchronize needed)."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def mask_report(tokens: int, doc_len: int = 512, repeats: int = 5) -> None:
    """Build time (first and median of `repeats`) and size of the flex BlockMask for `tokens` tokens."""
    docs = tokens // doc_len
    cu = torch.arange(0, (docs + 1) * doc_len, doc_len, dtype=torch.int32)  # (docs + 1,)
    layout = packed_layout(cu, doc_len, tokens)
    rss0 = _rss_mib()
    for window in (None, 64):
        first = time_once(lambda: flex_block_mask(layout, window))
        steady = statistics.median(time_once(lambda: flex_block_mask(layout, window)) for _ in range(repeats))
        mask = flex_block_mask(layout, window)
        size = sum(t.nbytes for t in mask.as_tuple() if isinstance(t, torch.Tensor))
        print(f"flex mask {tokens} tokens ({docs} x {doc_len}), window {window}: first {first:.3f} s, "
              f"median {steady:.3f} s, tensors {size / 2**20:.1f} MiB")
    print(f"peak RSS growth during mask builds: {_rss_mib() - rss0:.1f} MiB")


def crossover_report(pairs: int, heads: int = 12, head_dim: int = 64) -> None:
    """One local (±64) layer's attention alone: padded sdpa time / windowed time, by document length.

    Each row packs 16,384 tokens (or one document when longer) of equal-length documents; interleaved
    pairs as in `compare`. This is the measurement behind `CPU_WINDOWED_CROSSOVER`.
    """
    print("| document length | docs | sdpa / windowed (median [95% CI]) |")
    print("| --- | --- | --- |")
    for length in (64, 128, 192, 256, 512, 1024, 4096):
        docs = max(1, 16384 // length)
        cu = torch.arange(0, (docs + 1) * length, length, dtype=torch.int32)  # (docs + 1,)
        layout = packed_layout(cu, length, docs * length)
        gen = torch.Generator().manual_seed(0)
        q, k, v = (torch.randn(docs * length, heads, head_dim, generator=gen) for _ in range(3))
        runs = []
        for backend in (SdpaAttention(), WindowedSdpaAttention()):
            context = backend.prepare(layout, {64})
            runs.append(lambda b=backend, c=context: b.attend(q, k, v, layout, c, 64, head_dim ** -0.5))
        with torch.inference_mode():
            for fn in runs:
                fn()
            ratios = []
            for i in range(pairs):
                order = runs if i % 2 == 0 else runs[::-1]
                times = {fn: time_once(fn) for fn in order}
                ratios.append(times[runs[0]] / times[runs[1]])
        low, high = bootstrap(ratios)
        print(f"| {length} | {docs} | {statistics.median(ratios):.2f}x [{low:.2f}, {high:.2f}] |", flush=True)


def compare(name: str, lengths: list[int], pairs: int, seed: int) -> None:
    """Interleaved timing of ours vs transformers on one workload; prints one table row."""
    cfg = preset("base")
    choice = choose_backend("cpu", torch.float32, lengths, needs_window=True)
    ours = build(cfg, backend=choice.name, seed=seed)
    theirs = transformers_twin(ours)
    gen = torch.Generator().manual_seed(seed)
    docs = [torch.randint(100, 16000, (n,), generator=gen) for n in lengths]
    packed, padded = pack_documents(docs), pad_documents(docs, cfg.pad_token_id)
    tokens = packed.real_tokens

    def run_ours():
        return ours(packed.input_ids, cu_seqlens=packed.cu_seqlens, max_seqlen=packed.max_seqlen)

    def run_theirs():
        return theirs(input_ids=padded.input_ids, attention_mask=padded.attention_mask).last_hidden_state

    with torch.inference_mode():
        mask = padded.attention_mask.bool()
        error = (run_ours() - run_theirs()[mask]).abs().max().item()  # also the warmup of each
        ratios, t_ours, t_theirs = [], [], []
        for i in range(pairs):
            order = (run_ours, run_theirs) if i % 2 == 0 else (run_theirs, run_ours)
            times = {fn: time_once(fn) for fn in order}
            t_ours.append(times[run_ours])
            t_theirs.append(times[run_theirs])
            ratios.append(times[run_theirs] / times[run_ours])
    low, high = bootstrap(ratios)
    print(f"| {name} | {len(lengths)} | {tokens} | {choice.name} | {statistics.median(ratios):.2f}x "
          f"[{low:.2f}, {high:.2f}] | {tokens / statistics.median(t_ours):.0f} | "
          f"{tokens / statistics.median(t_theirs):.0f} | {error:.1e} |", flush=True)
    print(f"  reason: {choice.reason}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=5, help="timed AB/BA pairs per workload")
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help=f"comma list of {', '.join(WORKLOADS)}")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--crossover", action="store_true",
                        help="only time one local layer's attention, padded sdpa vs windowed, by document length")
    parser.add_argument("--mask-tokens", type=int, default=0, help="also time the flex BlockMask for N tokens")
    args = parser.parse_args()
    names = args.workloads.split(",")
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workloads {unknown}; choose from {', '.join(WORKLOADS)}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, fp32, base config, "
          f"{args.pairs} pairs, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    if args.crossover:
        crossover_report(args.pairs)
        return
    if args.mask_tokens:
        mask_report(args.mask_tokens)
    print("| workload | docs | tokens | our backend | speedup (median [95% CI]) | ours tok/s | transformers tok/s "
          "| max abs diff |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name in names:
        compare(name, WORKLOADS[name](torch.Generator().manual_seed(args.seed)), args.pairs, args.seed)


if __name__ == "__main__":
    main()
