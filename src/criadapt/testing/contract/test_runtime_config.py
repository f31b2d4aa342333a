"""``RuntimeConfig`` (v1 only) and ``UpdateRuntimeConfig``."""

from __future__ import annotations

from criadapt import models as m
from criadapt.client import Client
from criadapt.testing.contract.helpers import capable_call, optional_call


def test_runtime_config_reports_the_cgroup_driver(cri: Client, backend_info: m.BackendInfo) -> None:
    response = capable_call(backend_info, "runtime_config", cri.runtime_config)
    if response is None:
        return
    assert response.linux is not None, "RuntimeConfigResponse.linux is missing"
    assert response.linux.cgroup_driver in (m.CgroupDriver.SYSTEMD, m.CgroupDriver.CGROUPFS)


def test_runtime_config_does_not_change(cri: Client, backend_info: m.BackendInfo) -> None:
    """kubelet reads it once at startup and treats it as fixed (api.proto)."""
    first = capable_call(backend_info, "runtime_config", cri.runtime_config)
    second = capable_call(backend_info, "runtime_config", cri.runtime_config)
    assert first == second


def test_update_runtime_config_with_a_pod_cidr(cri: Client) -> None:
    """kubelet sends the node's pod CIDR; success or UNIMPLEMENTED, nothing else."""
    config = m.RuntimeConfig(network_config=m.NetworkConfig(pod_cidr="10.88.0.0/16"))
    optional_call(lambda: cri.update_runtime_config(runtime_config=config))


def test_update_runtime_config_without_a_cidr(cri: Client) -> None:
    optional_call(lambda: cri.update_runtime_config(runtime_config=m.RuntimeConfig()))
