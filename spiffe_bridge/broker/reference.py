"""Workload references of the SPIFFE Broker API: which workload a request is about.

The agent resolves a reference itself (a PID through /proc and its workload
attestors; a Kubernetes object through the API server) and never trusts
attributes from the broker, so a reference carries only what names the workload.
"""

from __future__ import annotations

from dataclasses import dataclass

from spiffe_bridge._proto import brokerapi_pb2 as bpb

#: Largest PID the wire format carries (``int32``).
MAX_PID = 2**31 - 1


@dataclass(frozen=True, slots=True)
class WorkloadPIDReference:
    """A process on the agent's node, by PID (a local reference: never across the network)."""

    pid: int

    def __post_init__(self) -> None:
        if isinstance(self.pid, bool) or not isinstance(self.pid, int) or not 0 < self.pid <= MAX_PID:
            raise ValueError(f"a workload PID must be an integer from 1 to {MAX_PID}, not {self.pid!r}")

    def message(self) -> bpb.WorkloadReference:
        """The ``WorkloadReference`` that carries this reference (packed in ``Any``)."""
        ref = bpb.WorkloadReference()
        ref.reference.Pack(bpb.WorkloadPIDReference(pid=self.pid))
        return ref

    def __str__(self) -> str:
        return f"pid {self.pid}"


@dataclass(frozen=True, slots=True)
class KubernetesObjectReference:
    """A Kubernetes object (``plural`` + ``group``, ``core`` for core resources) by name and/or UID."""

    plural: str
    group: str
    name: str = ""
    namespace: str = ""
    uid: str = ""

    def __post_init__(self) -> None:
        if not self.plural or not self.group:
            raise ValueError("a Kubernetes object reference needs its resource plural and group ('core')")
        if not self.name and not self.uid:
            raise ValueError("a Kubernetes object reference needs a name, a UID or both")
        if self.namespace and not self.name:
            raise ValueError("a Kubernetes object reference with a namespace needs a name")

    def message(self) -> bpb.WorkloadReference:
        """The ``WorkloadReference`` that carries this reference (packed in ``Any``)."""
        obj = bpb.KubernetesObjectReference(
            type=bpb.KubernetesObjectType(plural=self.plural, group=self.group), uid=self.uid
        )
        if self.name:
            obj.key.CopyFrom(bpb.KubernetesObjectKey(namespace=self.namespace, name=self.name))
        ref = bpb.WorkloadReference()
        ref.reference.Pack(obj)
        return ref

    def __str__(self) -> str:
        where = f"{self.namespace}/{self.name}" if self.namespace else self.name
        parts = [f"{self.plural}.{self.group}", where, f"uid {self.uid}" if self.uid else ""]
        return " ".join(p for p in parts if p)


Reference = WorkloadPIDReference | KubernetesObjectReference


def as_reference(value: Reference | int) -> Reference:
    """A reference from a reference or a bare PID."""
    if isinstance(value, WorkloadPIDReference | KubernetesObjectReference):
        return value
    return WorkloadPIDReference(value)
