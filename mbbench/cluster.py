"""The Ray executor of `mbbench matrix --ray`: one Ray task per configuration, placed by GPU type.

Ray schedules GPU tasks; mbbench only says what each needs. A GPU task asks for one whole GPU (so two
measurements never share a GPU) and, when the matrix names GPU types, for Ray's
`accelerator_type:<type>` resource, which Ray puts on every node with that GPU. A CPU task reserves the
threads it runs and a node to itself (the node's own `node:<address>` resource, whole): the driver hands
each free node the next CPU task, so CPU measurements never overlap on a node. The task runs
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

    def task_options(self, task: Task, node: str | None = None) -> dict:
        """Ray options of one task: one whole GPU for a GPU task; for a CPU task the threads it runs (at least
        --cpus-per-task) and, on `node` (that node's own `node:<address>` resource, 1.0 of it), the node
        alone: no two CPU measurements share a node (four at once measured a tenth of one alone)."""
        options = {"num_cpus": self.cpus_of(task), "num_gpus": 1 if task.device_kind == "cuda" else 0,
                   "name": f"mbbench {task.planned.identity.file_stem()}"}
        resources = {f"accelerator_type:{task.accelerator}": GPU_TYPE_AMOUNT} if task.accelerator else {}
        if node is not None:
            resources[node] = 1.0
        if resources:
            options["resources"] = resources
        return options

    def cpus_of(self, task: Task) -> float:
        """CPUs a task reserves: --cpus-per-task, and for a CPU task at least the intra-op threads it runs."""
        threads = task.planned.threads.intra if task.device_kind == "cpu" and task.planned.threads else 0
        return max(self.cpus_per_task, threads)

    def nodes_for(self, task: Task, nodes: dict[str, dict]) -> list[str]:
        """The nodes (by their `node:<address>` resource) that can run a CPU task: enough CPUs, its type label."""
        label = f"accelerator_type:{task.accelerator}" if task.accelerator else None
        return [node for node, have in nodes.items()
                if have.get("CPU", 0) >= self.cpus_of(task) and (label is None or label in have)]

    def infeasible(self, task: Task, cluster: dict) -> str | None:
        """Why no node of the cluster can ever run this task (Ray would leave it pending forever)."""
        if task.device_kind == "cuda" and cluster.get("GPU", 0) < 1:
            return "the Ray cluster has no GPUs"
        if task.accelerator and f"accelerator_type:{task.accelerator}" not in cluster:
            have = sorted(k.split(":", 1)[1] for k in cluster if k.startswith("accelerator_type:"))
            return (f"no node in the Ray cluster has GPU type {task.accelerator} "
                    f"(its types: {', '.join(have) or 'none'})")
        if cluster.get("CPU", 0) < self.cpus_of(task):
            return f"the Ray cluster has {cluster.get('CPU', 0):g} CPUs; the task asks for {self.cpus_of(task):g}"
        return None

    def run(self, tasks: list[Task]) -> Iterator[tuple[Task, Record]]:
        """Submit every GPU task at once (Ray places them); CPU tasks one per node at a time, the next one as a
        node comes free. Yields (task, record) as each finishes; cancels what is left when abandoned."""
        if not tasks:  # everything is recorded already: no need to reach (or start) a cluster
            return
        ray = self.connect()
        cluster, nodes = ray.cluster_resources(), node_resources(ray.nodes())
        remote = ray.remote(_ray_task)
        pending: dict = {}  # object ref -> (task, the node it holds alone, or None)
        queued, impossible, free = [], [], list(nodes)
        for task in tasks:
            reason = self.infeasible(task, cluster) or (
                None if task.device_kind != "cpu" or self.nodes_for(task, nodes) else
                f"no node has {self.cpus_of(task):g} CPUs" + (f" and GPU type {task.accelerator}"
                                                               if task.accelerator else ""))
            if reason:
                impossible.append((task, failed_record(task, MissingResource(reason))))
            elif task.device_kind == "cpu":
                queued.append(task)
            else:
                pending[remote.options(**self.task_options(task)).remote(task)] = (task, None)

        def dispatch() -> None:  # each free node takes the first queued CPU task it can run
            for node in list(free):
                task = next((t for t in queued if node in self.nodes_for(t, nodes)), None)
                if task is not None:
                    queued.remove(task)
                    free.remove(node)
                    pending[remote.options(**self.task_options(task, node)).remote(task)] = (task, node)

        dispatch()
        if self.say:
            self.say(f"submitted {len(pending) + len(queued)} tasks to Ray ({describe_cluster(cluster)}; CPU tasks "
                     f"one per node at a time); {len(impossible)} cannot be placed")
        yield from impossible
        yield from self._finish(ray, pending, free, dispatch)

    def _finish(self, ray, pending: dict, free: list, dispatch: Callable[[], None]) -> Iterator[tuple[Task, Record]]:
        """Collect tasks as they finish, handing each freed node (not a lost one) the next CPU task."""
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    task, node = pending.pop(ref)
                    record = self._collect(ray, ref, task)
                    if node is not None and getattr(record.payload, "error_type", None) != "NodeDiedError":
                        free.append(node)
                    yield task, record
                dispatch()
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


def node_resources(nodes: list[dict]) -> dict[str, dict]:
    """Each alive node's resources (`ray.nodes()`), keyed by the node's own resource `node:<address>`, of which
    every node has exactly 1.0: a task asking for all of it has the node to itself among such tasks."""
    found = {}
    for node in nodes:
        resources = node.get("Resources") or {}
        own = [k for k in resources if k.startswith("node:") and not k.startswith("node:__")]
        if node.get("Alive") and own:
            found[own[0]] = resources
    return found


def describe_cluster(cluster: dict) -> str:
    types = {k.split(":", 1)[1]: v for k, v in cluster.items() if k.startswith("accelerator_type:")}
    text = f"{cluster.get('CPU', 0):g} CPUs, {cluster.get('GPU', 0):g} GPUs"
    return text + (f"; GPU types: {', '.join(sorted(types))}" if types else "")
