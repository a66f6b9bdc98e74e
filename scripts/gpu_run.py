"""One prepared GPU session (issue 15): steps in order of value inside a time budget; everything comes home.

    OUT=/dir [BUDGET_S=510] [ONLY=step,step] bash scripts/gpu_check.sh      # on the GPU machine
    python3 scripts/gpu_run.py --rehearse --out DIR --budget 120           # the CPU rehearsal (tests)

Each step runs as a fresh process (`PYTHONPATH=.`, this interpreter) with its own cap, inside the total
budget; a step whose estimate does not fit in what is left is skipped and says so. Outputs go to a work
folder, which is packed into OUT/gpu-run.tar.gz after every step, so an interrupted session still brings
home everything done so far. OUT holds exactly four files: gpu-run.tar.gz, log.txt (driver log and the
tail of each step's output), steps.tsv (the step table), summary.txt (statuses and headline numbers).
The archive holds `gpu-run/` with results/<gpu-dir>/*.json records, environment.json, matmul_peak.json,
smoke.json, predictions.json, engines.json, matrix/, report/, logs/<step>.log (full output), steps.tsv and
summary.txt.
Standard library only: it runs before anything else is known to work.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ARCHIVE = "gpu-run.tar.gz"
LOG_TAIL_LINES = 40


@dataclass(frozen=True)
class Command:
    """A command line ({py}: this interpreter, {w}: the work folder), its expected and maximum seconds."""

    line: str
    estimate_s: int
    cap_s: int


@dataclass(frozen=True)
class Step:
    name: str
    what: str
    gpu: Command
    rehearse: Command  # the CPU twin: same code path where one exists, never a silent skip


MODELS = "--model modernbert-base --model hf-modernbert-base --model bert-base"
RUN = "{py} -m mbbench.cli run " + MODELS
CPU_TINY = "--tiny --device cpu"

# Every command line of the session, in order of value. Estimates are for an H200 (one fresh process each,
# about 5 s of imports and CUDA start included); caps bound a step that hangs or runs long.
STEPS: list[Step] = [
    Step("environment", "device, software, backends, nvidia-smi clocks",
         Command("{py} scripts/gpu_steps.py environment --device cuda --out {w}/environment.json", 10, 30),
         Command("{py} scripts/gpu_steps.py environment --device cpu --out {w}/environment.json", 5, 30)),
    Step("matmul_peak", "bf16 8192^3 matmul peak (the MFU denominator)",
         Command("{py} -m mbbench.bench.matmul --out {w}/matmul_peak.json", 10, 45),
         Command("{py} scripts/gpu_steps.py matmul --device cpu --dtype float32 --n 512 --out {w}/matmul_peak.json",
                 5, 30)),
    Step("smoke", "varlen vs eager (global, ±64) on the packed layout; memory cap -> typed OOM; warm event timing",
         Command("{py} scripts/gpu_steps.py smoke --device cuda --out {w}/smoke.json", 20, 60),
         Command("{py} scripts/gpu_steps.py smoke --device cpu --out {w}/smoke.json", 8, 40)),
    Step("verify_bf16", "modernbert-base, varlen and sdpa in bf16, against eager fp32 and transformers",
         Command("{py} -m mbbench.cli verify --model modernbert-base --device cuda --dtype bfloat16 "
                 "--backend varlen --backend sdpa --backend windowed", 40, 90),
         Command("{py} -m mbbench.cli verify --config tiny --device cpu --dtype bfloat16 --backend sdpa", 8, 60)),
    Step("throughput_short", "tokens/s, short-fixed and short-variable, 1024 documents, 5 passes",
         Command(RUN + " --suite short-fixed --suite short-variable --docs 1024 --runs 5 --device cuda "
                 "--out {w}/results --quiet", 70, 110),
         Command(RUN + " --suite short-fixed --suite short-variable --docs 4 --runs 1 " + CPU_TINY +
                 " --out {w}/results --quiet", 15, 60)),
    Step("throughput_long", "tokens/s, long-fixed and long-variable, 32 documents, 5 passes (bert-base: unsupported)",
         Command(RUN + " --suite long-fixed --suite long-variable --docs 32 --runs 5 --device cuda "
                 "--out {w}/results --quiet", 60, 100),
         Command("{py} -m mbbench.cli run --model modernbert-base --model bert-base --suite long-variable "
                 "--docs 1 --runs 1 " + CPU_TINY + " --out {w}/results --quiet", 10, 60)),
    # Issue 35: the throughput records against the predictions committed under results/ before the session ran
    Step("predictions", "measured tokens/s vs the committed predictions of the same configurations (results/)",
         Command("{py} scripts/gpu_steps.py predictions --results {w}/results --predictions results "
                 "--out {w}/predictions.json", 10, 40),
         Command("{py} scripts/gpu_steps.py predictions --results {w}/results --predictions results "
                 "--out {w}/predictions.json", 8, 40)),
    # 24GiB: the paper's RTX 4090 column (1604 for ModernBERT-base) and cheap trials (~1.5M tokens each);
    # granularity 32 at ~2900 (the memory model's seed) keeps a seed within 2x to <= 8 trials.
    Step("max_batch", "modernbert-base short-fixed under a 24GiB cap (RTX 4090 size), seeded, <= 8 trials",
         Command("{py} -m mbbench.cli max-batch --model modernbert-base --suite short-fixed --device cuda "
                 "--memory-limit 24GiB --granularity 32 --max-trials 8 --max-seconds 65 --out {w}/results", 70, 95),
         Command("{py} -m mbbench.cli max-batch --model modernbert-base --suite short-fixed " + CPU_TINY +
                 " --granularity 1 --seed 2 --emulate-oom-above 1124 --max-trials 2 --out {w}/results", 12, 60)),
    # Per-request latency (issue 28): CUDA events around each forward, cold start apart; 2 s per batch size.
    Step("latency", "modernbert-base short-variable, per-request latency at batch 1, 8, 64 (>= 100 requests, 2 s each)",
         Command("{py} -m mbbench.cli latency --model modernbert-base --suite short-variable --device cuda "
                 "--batch-size 1 --batch-size 8 --batch-size 64 --requests 100 --min-seconds 2 --out {w}/results "
                 "--quiet", 25, 60),
         Command("{py} -m mbbench.cli latency --model modernbert-base --suite short-variable --batch-size 1 "
                 "--batch-size 2 --requests 3 --min-seconds 0 --warmup 1 " + CPU_TINY + " --out {w}/results --quiet",
                 10, 60)),
    # The measured sweep (issue 32): three widths around ModernBERT-base at its GLU, two layers, measured interleaved
    # beside the GPU model's prediction for this GPU: the first check of the model's ranking on real hardware.
    Step("measured_sweep", "sweep --measure: hidden 704/768/832 at GLU 2304, 2 layers, 16,384 tokens, 6 rounds, "
         "beside the GPU model's ranking",
         Command("{py} -m mbbench.cli sweep --measure --device cuda --hidden 704,768,832 --glu 2304 --layers 2 "
                 "--tokens 16384 --rounds 6 --out {w}/results --quiet", 20, 50),
         Command("{py} -m mbbench.cli sweep --measure --device cpu --hidden 64,128 --glu 128,256 --layers 1 "
                 "--head-dim 32 --tokens 128 --rounds 2 --block 2 --elementwise eager --out {w}/results --quiet",
                 10, 60)),
    Step("gpu_tests", "pytest -m gpu (flex parity left to the last step)",
         Command("{py} -m pytest -q -m gpu tests/test_gpu.py -k 'not flex' -p no:cacheprovider", 50, 90),
         Command("{py} -m pytest -q -rs -m gpu tests/test_gpu.py -k 'not flex' -p no:cacheprovider", 6, 60)),
    Step("matrix_local", "mbbench matrix, local executor: type label, placement check, NVML by UUID",
         Command("{py} -m mbbench.cli matrix --model modernbert-base --model bert-base --suite short-variable "
                 "--docs 256 --runs 3 --gpu h200 --gpu h100 --out {w}/matrix --quiet", 30, 60),
         Command("{py} -m mbbench.cli matrix --model modernbert-base --suite short-variable --docs 2 --runs 1 "
                 "--tiny --device cpu --out {w}/matrix --quiet", 8, 60)),
    Step("engines", "compare torch vs torch-compile vs onnxruntime (left out without its CUDA provider), fp16 (bf16 "
         "on the CPU rehearsal), short-variable, 128 documents, 3 rounds, the accuracy gate first",
         Command("{py} scripts/gpu_steps.py engines --device cuda --out {w}/engines.json --results {w}/results",
                 40, 75),
         Command("{py} scripts/gpu_steps.py engines --device cpu --tiny --out {w}/engines.json --results {w}/results",
                 40, 150)),
    Step("report", "report.md, index.html and figures from the records",
         Command("{py} -m mbbench.cli report --results {w}/results --out {w}/report", 15, 40),
         Command("{py} -m mbbench.cli report --results {w}/results --out {w}/report --include-smoke", 10, 40)),
    Step("gpu_tests_flex", "FlexAttention parity in bf16 (cold compile; auto never picks flex on Hopper)",
         Command("{py} -m pytest -q -m gpu tests/test_gpu.py -k flex -p no:cacheprovider", 40, 60),
         Command("{py} -m pytest -q -rs -m gpu tests/test_gpu.py -k flex -p no:cacheprovider", 5, 60)),
]


# --------------------------------------------------------------------------------------------- the session

class Session:
    """The work folder, the files in OUT, the budget clock and the step table."""

    def __init__(self, out: Path, work: Path, budget_s: float, rehearse: bool):
        self.out, self.work, self.budget_s, self.rehearse = out, work, budget_s, rehearse
        self.began = time.monotonic()
        self.rows: list[dict] = []
        (work / "logs").mkdir(parents=True, exist_ok=True)
        out.mkdir(parents=True, exist_ok=True)
        (out / "log.txt").write_text("")

    def left(self) -> float:
        return self.budget_s - (time.monotonic() - self.began)

    def say(self, text: str) -> None:
        print(text, flush=True)
        with open(self.out / "log.txt", "a") as log:
            log.write(text + "\n")

    def command(self, step: Step) -> Command:
        return step.rehearse if self.rehearse else step.gpu

    def argv(self, step: Step) -> list[str]:
        line = self.command(step).line.format(py=shlex.quote(sys.executable), w=shlex.quote(str(self.work)))
        return shlex.split(line)

    def record(self, step: Step, status: str, seconds: float, note: str = "") -> None:
        command = self.command(step)
        self.rows.append({"step": step.name, "status": status, "seconds": round(seconds, 1),
                          "estimate_s": command.estimate_s, "cap_s": command.cap_s, "note": note})
        table = "\n".join(["\t".join(self.rows[0])] + ["\t".join(str(v) for v in row.values())
                                                       for row in self.rows]) + "\n"
        for folder in (self.out, self.work):
            (folder / "steps.tsv").write_text(table)


def run_step(session: Session, step: Step) -> None:
    """Run one step in its own process group, capped by min(cap, time left); record its status."""
    command = session.command(step)
    left = session.left()
    if command.estimate_s > left:
        session.say(f"=== {step.name}: skipped: needs about {command.estimate_s} s, {left:.0f} s of the budget left")
        session.record(step, "skipped", 0.0, f"budget: {left:.0f} s left < estimate {command.estimate_s} s")
        return
    limit = max(1.0, min(command.cap_s, left))
    argv = session.argv(step)
    session.say(f"=== {step.name} (cap {limit:.0f} s): {shlex.join(argv)}")
    log_path = session.work / "logs" / f"{step.name}.log"
    env = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
                        "PYTHONUNBUFFERED": "1"}
    began = time.monotonic()
    with open(log_path, "w") as log:
        process = subprocess.Popen(argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            rc = process.wait(timeout=limit)
            status, note = ("ok", "") if rc == 0 else ("failed", f"exit status {rc}")
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # the step and every process it started
            process.wait()
            status, note = "timeout", f"stopped at its cap of {limit:.0f} s"
    seconds = time.monotonic() - began
    tail = log_path.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
    with open(session.out / "log.txt", "a") as log:
        log.write("\n".join(tail) + "\n")
    last = next((line.strip() for line in reversed(tail) if line.strip() and not set(line.strip()) <= set("=-")), "")
    note = "; ".join(filter(None, [note, last[:120].replace("\t", " ")]))  # e.g. pytest's "3 passed, 2 deselected in 31.2s"
    session.say(f"--- {step.name}: {status} in {seconds:.1f} s {note}".rstrip())
    session.record(step, status, seconds, note)


def pack(session: Session) -> None:
    """Archive the work folder as OUT/gpu-run.tar.gz (written beside, then renamed: never half a file)."""
    partial = session.out / (ARCHIVE + ".partial")
    with tarfile.open(partial, "w:gz") as tar:
        tar.add(session.work, arcname="gpu-run")
    os.replace(partial, session.out / ARCHIVE)


# ------------------------------------------------------------------------------------------------- summary

def _records(work: Path) -> list[dict]:
    """The records under work/results, flattened to the few fields the summary prints (schema 3 JSON, as this
    mbbench writes it)."""
    records = []
    for path in sorted(glob.glob(str(work / "results" / "*" / "*.json"))):
        try:
            data = json.loads(Path(path).read_text())
            ident, payload = data["identity"], data.get("payload") or {}
            setup = payload.get("setup") or {}
            limits = dict(ident.get("limits") or [])
            records.append({
                "model": ident["model"] + ("-tiny" if ident.get("tiny") else ""), "suite": ident["suite"],
                "status": data["status"], "measurement": ident["measurement"],
                "backend": (payload.get("build") or setup.get("build") or payload).get("backend"), "tokens_per_second": payload.get("tokens_per_second"),
                "tokens_per_second_stats": payload.get("tokens_per_second_stats"),
                "passes": len(payload.get("run_seconds") or []),
                "max_batch_size": payload.get("result") if payload.get("mode") == "batch" else None,
                "max_token_budget": payload.get("result") if payload.get("mode") == "tokens" else None,
                "memory_limit_gb": (limits.get("memory_limit_bytes") or 0) / 1e9 or None,
                "trials": payload.get("trials") or [], "search_seconds": payload.get("search_seconds"),
                "search_seed": payload.get("seed"), "capped": payload.get("capped"),
                "bracket": payload.get("bracket"), "points": payload.get("points") or [],
                "first_call_seconds": setup.get("first_call_seconds"), "candidates": payload.get("candidates") or [],
                "rank_correlation": payload.get("rank_correlation"),
                "predicted_best_tied": payload.get("predicted_best_tied")})
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return records


def _load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def headline(work: Path) -> list[str]:
    """Matmul peak, smoke checks, tokens/s per model and suite, max batch: what the session measured."""
    lines = []
    peak = _load(work / "matmul_peak.json")
    if peak:
        lines.append(f"matmul peak: {peak['tflops_median']:.4g} TFLOP/s median ({peak['dtype']}, n={peak['n']})")
    smoke = _load(work / "smoke.json")
    if smoke:
        lines.append("smoke: " + ", ".join(
            f"{c['name']} {('pass' if c['passed'] else 'FAIL') if c.get('judged', True) else 'info'}"
            for c in smoke["checks"]))
    records = _records(work)
    timed = [r for r in records if r.get("measurement") not in ("max_batch", "latency", "measured_sweep")]
    if timed:
        lines.append(f"{'model':<24} {'suite':<15} {'status':<11} {'backend':<8} {'tokens/s':>12} {'iqr/med':>8}")
    for r in sorted(timed, key=lambda r: (r["model"], r["suite"])):
        tps = r.get("tokens_per_second")
        iqr = (r.get("tokens_per_second_stats") or {}).get("iqr_over_median") if r.get("passes", 0) > 1 else None
        lines.append(f"{r['model']:<24} {r['suite']:<15} {r['status']:<11} {str(r.get('backend')):<8} "
                     f"{f'{tps:,.0f}' if tps else '–':>12} {f'{iqr:.1%}' if iqr is not None else '':>8}")
    for r in (r for r in records if r.get("measurement") == "max_batch"):
        size = r.get("max_batch_size") or r.get("max_token_budget")
        limit = f", limit {r['memory_limit_gb']:.1f} GB" if r.get("memory_limit_gb") else ""
        lines.append(f"max batch {r['model']} / {r['suite']}{limit}: {size} in {len(r.get('trials', []))} trials, "
                     f"{r.get('search_seconds', 0):.0f} s (seed {r.get('search_seed')}, capped {r.get('capped')}, "
                     f"bracket {r.get('bracket')})")
    checks = (_load(work / "predictions.json") or {}).get("checks") or []
    for c in (c for c in checks if c.get("predicted")):
        band = c.get("band")
        lines.append(f"predicted vs measured {c['model']} / {c['suite']}: {c['measured']:,.0f} measured, "
                     f"{c['predicted']:,.0f} predicted ({c['error']:+.1%}"
                     + (f"; band {band[0]:,.0f}-{band[1]:,.0f}, {'inside' if c['inside'] else 'OUTSIDE'})"
                        if band else ")"))
    for r in (r for r in records if r.get("measurement") == "measured_sweep"):
        rho = (r.get("rank_correlation") or {}).get("ranking")
        lines.append(f"measured sweep ({r['status']}): {len(r['candidates'])} shapes, Spearman "
                     f"{'–' if rho is None else f'{rho:.2f}'} (predicted vs measured), predicted best tied with the "
                     f"measured best: {r.get('predicted_best_tied')}")
    for r in (r for r in records if r.get("measurement") == "latency"):
        points = "; ".join(f"batch {p['batch_size']}: p50 {p['latency_seconds']['p50'] * 1e3:.2f} ms, p99 "
                           f"{p['latency_seconds']['p99'] * 1e3:.2f} ms, {p['tokens_per_second']:,.0f} tokens/s"
                           for p in r["points"])
        first = r.get("first_call_seconds")
        lines.append(f"latency {r['model']} / {r['suite']} ({r['status']}): {points or '–'}"
                     + (f" (first call {first * 1e3:.0f} ms)" if first is not None else ""))
    return lines


def summarize(session: Session) -> str:
    mode = "REHEARSAL (CPU twins, tiny models)" if session.rehearse else "GPU session"
    lines = [f"{mode}: {time.monotonic() - session.began:.0f} s of a {session.budget_s:.0f} s budget", "",
             f"{'step':<18} {'status':<8} {'seconds':>8} {'estimate':>8}  note"]
    lines += [f"{r['step']:<18} {r['status']:<8} {r['seconds']:>8} {r['estimate_s']:>8}  {r['note']}"
              for r in session.rows]
    text = "\n".join(lines + [""] + headline(session.work)) + "\n"
    for folder in (session.out, session.work):
        (folder / "summary.txt").write_text(text)
    return text


# -------------------------------------------------------------------------------------------------- main

def plan_text(steps: list[Step], rehearse: bool, budget_s: float) -> str:
    """The session's own time estimate, printed before anything runs."""
    total, lines = 0, []
    for step in steps:
        command = step.rehearse if rehearse else step.gpu
        total += command.estimate_s
        fits = "" if total <= budget_s else "  (beyond the budget: skipped unless earlier steps finish early)"
        lines.append(f"  {step.name:<18} ~{command.estimate_s:>3} s (cap {command.cap_s:>3} s){fits}")
    head = f"plan: {len(steps)} steps, about {total} s of a {budget_s:.0f} s budget"
    return "\n".join([head, *lines])


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("OUT"), help="where the 4 files go (default $OUT)")
    parser.add_argument("--work", default=os.environ.get("WORK"), help="work folder (default: a new temporary one)")
    parser.add_argument("--budget", type=float, default=float(os.environ.get("BUDGET_S") or 510),
                        help="total seconds for all steps (default $BUDGET_S or 510)")
    parser.add_argument("--only", default=os.environ.get("ONLY"), help="comma-separated step names (a rerun)")
    parser.add_argument("--rehearse", action="store_true", help="CPU twins, tiny models (the test suite's run)")
    parser.add_argument("--list", action="store_true", help="print the steps and their commands, run nothing")
    args = parser.parse_args(argv)
    if not args.out and not args.list:
        parser.error("--out (or $OUT) is required")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    steps = STEPS
    if args.only:
        wanted = [name.strip() for name in args.only.split(",") if name.strip()]
        unknown = sorted(set(wanted) - {s.name for s in STEPS})
        if unknown:
            sys.exit(f"gpu_run: unknown step(s) {', '.join(unknown)}; steps: {', '.join(s.name for s in STEPS)}")
        steps = [s for s in STEPS if s.name in wanted]
    if args.list:
        for step in steps:
            command = step.rehearse if args.rehearse else step.gpu
            print(f"{step.name}: {step.what}\n    {command.line}")
        return 0
    out = Path(args.out).resolve()
    work = Path(args.work).resolve() if args.work else Path(tempfile.mkdtemp(prefix="gpu-run-"))
    session = Session(out, work, args.budget, args.rehearse)
    session.say(plan_text(steps, args.rehearse, args.budget))
    session.say(f"python: {sys.executable}; repo: {REPO}; work: {work}; out: {out}")
    for step in steps:
        run_step(session, step)
        summarize(session)
        pack(session)
    text = summarize(session)
    pack(session)
    session.say("\n" + text)
    if not args.work:  # everything is in the archive; a temporary work folder is not left behind
        shutil.rmtree(work, ignore_errors=True)
    return 0 if all(r["status"] == "ok" for r in session.rows) else 1


if __name__ == "__main__":
    sys.exit(main())
