"""This machine: device strings, detection of the local CPU or GPU, and NVML handles.

The basket (datasheets) is `hardware.gpus`; this module matches what torch and NVML report against it.
"""

from __future__ import annotations

import platform
import re

import torch

from mbbench.errors import UserError
from mbbench.hardware.gpus import lookup, match_device_name
from mbbench.records import DeviceInfo


def nvml_handle(torch_index: int = 0):
    """The NVML handle of torch's `cuda:<torch_index>`.

    torch numbers only the visible GPUs (CUDA_VISIBLE_DEVICES, which Ray sets per task) while NVML numbers
    every GPU of the machine, so index 0 in one is not index 0 in the other: match by UUID instead.
    """
    import pynvml

    pynvml.nvmlInit()
    uuid = getattr(torch.cuda.get_device_properties(torch_index), "uuid", None)
    if uuid is not None:
        text = str(uuid)
        try:
            return pynvml.nvmlDeviceGetHandleByUUID(text if text.startswith(("GPU-", "MIG-")) else f"GPU-{text}")
        except pynvml.NVMLError:
            pass
    return pynvml.nvmlDeviceGetHandleByIndex(torch_index)


def _nvml_info(index: int) -> dict:
    try:
        import pynvml

        handle = nvml_handle(index)
        name = pynvml.nvmlDeviceGetName(handle)
        info = {"name": name.decode() if isinstance(name, bytes) else name,
                "driver": pynvml.nvmlSystemGetDriverVersion(),
                "uuid": pynvml.nvmlDeviceGetUUID(handle),
                "memory_bytes": int(pynvml.nvmlDeviceGetMemoryInfo(handle).total)}
        return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in info.items()}
    except Exception:
        return {}


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8", errors="replace"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# /proc/cpuinfo flag -> the unit it names, widest first: what an encoder's GEMMs can compute with. bf16 and fp16
# run natively only with AMX or the AVX-512 BF16/FP16 extensions; oneDNN, OpenVINO and Inductor pick kernels by
# them (source: Linux arch/x86/include/asm/cpufeatures.h for the flag names)
MATRIX_UNITS = (("amx_bf16", "amx-bf16"), ("amx_fp16", "amx-fp16"), ("avx512_bf16", "avx512-bf16"),
                ("avx512_fp16", "avx512-fp16"), ("avx512f", "avx512"), ("avx2", "avx2"))


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The `flags` of the first processor in /proc/cpuinfo (or in `cpuinfo`, its text); empty when unreadable."""
    try:
        text = cpuinfo if cpuinfo is not None else open("/proc/cpuinfo", encoding="utf-8", errors="replace").read()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_isa(flags: frozenset[str]) -> str:
    """The matrix and vector units among `flags`, widest first ("amx-bf16 avx512-bf16 avx512 avx2"), or "none"."""
    return " ".join(unit for flag, unit in MATRIX_UNITS if flag in flags) or "none"


def cpu_device(cpuinfo: str | None = None) -> DeviceInfo:
    """This CPU as a record names it: model name, units from its flags, and the kernels ATen dispatches to."""
    flags = cpu_flags(cpuinfo)
    return DeviceInfo("cpu", cpu_name(), None, isa=cpu_isa(flags) if flags else None,
                      cpu_capability=torch.backends.cpu.get_cpu_capability())


# /proc/cpuinfo flags that decide which GEMM and element-wise kernels run fast (vector and matrix units)
ISA_FLAG = re.compile(r"^(sse4_\d|avx\w*|fma|f16c|amx\w*)$")


def isa_flags() -> tuple[str, ...]:
    """This CPU's vector and matrix instruction sets: the kernel-relevant /proc/cpuinfo flags (AVX2, AVX-512
    subsets, AMX, FMA, F16C, ...), sorted, plus torch's own dispatch level as "torch:AVX2" (also the only entry
    where /proc/cpuinfo cannot be read). Part of the kernel cache's key (`bench.kernel_store`)."""
    flags: set[str] = set()
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8", errors="replace"):
            if line.startswith("flags"):
                flags = {flag for flag in line.split(":", 1)[1].split() if ISA_FLAG.match(flag)}
                break
    except OSError:
        pass
    return (*sorted(flags), f"torch:{torch.backends.cpu.get_cpu_capability()}")


DEVICE_FORMS = "auto, cpu, cuda or cuda:N"


def parse_device(text: str):
    """A device string -> `torch.device`: 'auto' (first CUDA GPU, else CPU), 'cpu', 'cuda', 'cuda:N'.

    Raises UserError naming the problem: a device kind mbbench cannot run on (tpu, mps, ...), a malformed
    index, no CUDA GPU visible to torch, or an index >= the number of visible GPUs.
    """
    name = text.strip().lower() if isinstance(text, str) else str(text)
    if name == "auto":
        return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", name)
    if not match:
        raise UserError(f"unknown device {text!r}: mbbench runs on {DEVICE_FORMS}")
    if not torch.cuda.is_available():
        raise UserError(f"device {text!r}: torch {torch.__version__} sees no CUDA GPU here "
                        f"({'a CPU-only build' if torch.version.cuda is None else 'no GPU visible'}); use cpu")
    count, index = torch.cuda.device_count(), int(match.group(1) or 0)
    if index >= count:
        raise UserError(f"device {text!r}: torch sees {count} CUDA GPU{'s' if count != 1 else ''} "
                        f"(cuda:0 to cuda:{count - 1})")
    return torch.device("cuda", index)


def detect(device: str = "auto") -> DeviceInfo:
    """The local device, with torch's CUDA index: NVML first (names, driver), then torch; CPU without a GPU.

    `device` is validated by `parse_device` (UserError for tpu, cuda:7 on a one-GPU machine, ...).
    """
    chosen = parse_device(device)
    if chosen.type == "cpu":
        return cpu_device()
    index = chosen.index or 0
    props = torch.cuda.get_device_properties(index)
    nvml = _nvml_info(index)
    name = nvml.get("name") or props.name
    gpu = match_device_name(name)
    return DeviceInfo("cuda", name, gpu.id if gpu else None, index, props.multi_processor_count,
                      f"{props.major}.{props.minor}", int(nvml.get("memory_bytes") or props.total_memory),
                      nvml.get("driver"), torch.version.cuda, nvml.get("uuid"))


def torch_device(device: DeviceInfo) -> str:
    """The torch device string of a detected device: "cpu" or "cuda:N" (the index is never dropped)."""
    return "cpu" if device.kind == "cpu" else f"cuda:{device.index or 0}"


def check_requested_gpu(requested: str, local: DeviceInfo) -> None:
    """Refuse to label a measurement with a GPU the machine does not have."""
    if requested == "auto":
        return
    wanted = lookup(requested)
    if local.kind == "cpu":
        raise UserError(f"--gpu {requested} asks for {wanted.name}, but this run's device is the CPU "
                        f"({local.name}); use `mbbench predict` for a prediction")
    if local.basket_id != wanted.id:
        raise UserError(f"--gpu {requested} asks for {wanted.name}, but the local GPU is {local.name}; "
                        "refusing to mislabel the result (use `mbbench predict` for a prediction)")
