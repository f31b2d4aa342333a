"""``ListMetricDescriptors`` and ``ListPodSandboxMetrics`` (v1 only, optional)."""

from __future__ import annotations

from criadapt import models as m
from criadapt.client import Client
from criadapt.testing.contract.helpers import capable_call
from criadapt.testing.plugin import SandboxFactory


def test_metric_descriptors(cri: Client, backend_info: m.BackendInfo) -> None:
    response = capable_call(backend_info, "pod_sandbox_metrics", cri.list_metric_descriptors)
    if response is None:
        return
    names = [descriptor.name for descriptor in response.descriptors]
    assert all(names), "a MetricDescriptor has no name"
    assert len(names) == len(set(names)), f"descriptor names are not unique: {names}"


def test_pod_sandbox_metrics(
    cri: Client, sandbox_factory: SandboxFactory, backend_info: m.BackendInfo
) -> None:
    sandbox_factory()
    response = capable_call(backend_info, "pod_sandbox_metrics", cri.list_pod_sandbox_metrics)
    if response is None:
        return
    ids = [pod.pod_sandbox_id for pod in response.pod_metrics]
    assert all(ids), "PodSandboxMetrics without a pod_sandbox_id"
    assert len(ids) == len(set(ids)), f"a sandbox is reported twice: {ids}"
