"""The Ray executor of `mbbench matrix --ray`: one Ray task per configuration, placed by GPU type.

Ray schedules; mbbench only says what each task needs. A GPU task asks for one whole GPU (so two
measurements never share a GPU) and, when the matrix names GPU types, for Ray's
`accelerator_type:<type>` resource, which Ray puts on every node with that GPU. The task runs
`matrix.execute`, the code path of `mbbench run`, on the node, and returns its record to the driver,
which writes it. Ray is an optional extra (`pip install 'mbbench[ray]'`), imported only here.
"""

from __future__ import annotations

import contextlib
import re
import socket
from dataclasses import dataclass
from typing import Callable, Iterator

from mbbench.errors import UserError
from mbbench.matrix import Task, execute, failed_record
from mbbench.records import Record

INSTALL_HINT = "pip install 'mbbench[ray]'  (or: pip install ray)"
# Ray's own convention for accelerator_type requests: a token amount, so every GPU of a node takes tasks.
GPU_TYPE_AMOUNT = 0.001


class MissingResource(RuntimeError):
    """No node of the cluster can ever run a task (Ray would leave it pending forever)."""


def import_ray():
    try:
        import ray
    except ImportError:
        raise UserError(f"--ray needs Ray, which is not installed here; install it with: {INSTALL_HINT}") from None
    return ray


def _ray_task(task: Task) -> Record:
    """What a Ray worker runs: the same measurement as a local run, returned rather than written."""
    return execute(task, via="ray")


@dataclass
class RayExecutor:
    address: str | None = None  # None: Ray's default (RAY_ADDRESS, a running local cluster, else a new one)
    cpus_per_task: float = 1.0
    say: Callable[[str], None] | None = None
    via: str = "ray"

    def connect(self):
        ray = import_ray()
        if not ray.is_initialized():
            check_reachable(self.address)
            try:
                ray.init(address=self.address, logging_level="WARNING")
            except (ConnectionError, RuntimeError, ValueError) as error:
                raise UserError(f"cannot connect to Ray at {self.address or '(default address)'}: {error}") from None
        return ray

    def task_options(self, task: Task) -> dict:
        options = {"num_cpus": self.cpus_per_task, "num_gpus": 1 if task.device_kind == "cuda" else 0,
                   "name": f"mbbench {task.planned.identity.file_stem()}"}
        if task.accelerator:
            # A CPU task takes the node's whole type label, so CPU measurements never share a node.
            amount = GPU_TYPE_AMOUNT if task.device_kind == "cuda" else 1
            options["resources"] = {f"accelerator_type:{task.accelerator}": amount}
        return options

    def infeasible(self, task: Task, cluster: dict) -> str | None:
        """Why no node of the cluster can ever run this task (Ray would leave it pending forever)."""
        if task.device_kind == "cuda" and cluster.get("GPU", 0) < 1:
            return "the Ray cluster has no GPUs"
        if task.accelerator and f"accelerator_type:{task.accelerator}" not in cluster:
            have = sorted(k.split(":", 1)[1] for k in cluster if k.startswith("accelerator_type:"))
            return (f"no node in the Ray cluster has GPU type {task.accelerator} "
                    f"(its types: {', '.join(have) or 'none'})")
        if cluster.get("CPU", 0) < self.cpus_per_task:
            return f"the Ray cluster has {cluster.get('CPU', 0):g} CPUs; each task asks for {self.cpus_per_task:g}"
        return None

    def run(self, tasks: list[Task]) -> Iterator[tuple[Task, Record]]:
        if not tasks:  # everything is recorded already: no need to reach (or start) a cluster
            return
        ray = self.connect()
        cluster = ray.cluster_resources()
        remote = ray.remote(_ray_task)
        pending, impossible = {}, []
        for task in tasks:
            reason = self.infeasible(task, cluster)
            if reason:
                impossible.append((task, failed_record(task, MissingResource(reason))))
            else:
                pending[remote.options(**self.task_options(task)).remote(task)] = task
        if self.say:
            self.say(f"submitted {len(pending)} tasks to Ray ({describe_cluster(cluster)}); "
                     f"{len(impossible)} cannot be placed")
        yield from impossible
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    task = pending.pop(ref)
                    yield task, self._collect(ray, ref, task)
        finally:  # interrupted (Ctrl-C) or abandoned: do not leave tasks running on the cluster
            for ref in pending:
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)

    @staticmethod
    def _collect(ray, ref, task: Task) -> Record:
        try:
            return ray.get(ref)
        except ray.exceptions.RayError as error:  # node lost, worker crashed, cancelled, import failed there
            return failed_record(task, error)


def check_reachable(address: str | None, timeout_s: float = 5.0) -> None:
    """Fail in seconds on an explicit address nobody listens at (Ray itself retries for minutes)."""
    match = re.fullmatch(r"(?:ray://)?\[?([^\]/]+?)\]?:(\d+)/?", address or "")
    if not match:  # None, "auto", "local": Ray's own lookup, which fails fast
        return
    host, port = match.group(1), int(match.group(2))
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as error:
        raise UserError(f"cannot reach a Ray cluster at {address}: {error.strerror or error}; "
                        "is `ray start --head` running there, and is the port open?") from None


def describe_cluster(cluster: dict) -> str:
    types = {k.split(":", 1)[1]: v for k, v in cluster.items() if k.startswith("accelerator_type:")}
    text = f"{cluster.get('CPU', 0):g} CPUs, {cluster.get('GPU', 0):g} GPUs"
    return text + (f"; GPU types: {', '.join(sorted(types))}" if types else "")
