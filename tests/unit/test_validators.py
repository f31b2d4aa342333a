"""The hand-kept validation rules, through the models they are wired into."""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from criadapt import models as m
from criadapt.errors import InvalidArgument
from criadapt.validators import CLASS_RULES, FIELD_RULES, ValidationError, label_key_problem
from criadapt.wire import converter

META = m.PodSandboxMetadata(name="p", uid="u", namespace="n")
IMAGE = m.ImageSpec(image="busybox")


def container_config(**kw: Any) -> m.ContainerConfig:
    return m.ContainerConfig(metadata=m.ContainerMetadata(name="c"), image=IMAGE, **kw)


def test_every_rule_names_an_existing_field() -> None:
    for key in FIELD_RULES:
        message, field = key.split(".")
        assert field in attrs.fields_dict(m.MODELS[message])
    assert set(CLASS_RULES) <= set(m.MODELS)


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: m.PodSandboxConfig(), "PodSandboxConfig.metadata is required"),
        (lambda: m.PodSandboxMetadata(uid="u", namespace="n"), "PodSandboxMetadata.name"),
        (lambda: m.ContainerConfig(image=IMAGE), "ContainerConfig.metadata is required"),
        (
            lambda: m.ContainerConfig(metadata=m.ContainerMetadata(name="c")),
            "ContainerConfig.image",
        ),
        (lambda: m.StopPodSandboxRequest(), "StopPodSandboxRequest.pod_sandbox_id"),
        (lambda: m.ExecSyncRequest(container_id="c"), "ExecSyncRequest.cmd"),
        (lambda: m.ExecRequest(container_id="c", cmd=["sh"]), "one of stdin, stdout and stderr"),
        (
            lambda: m.ExecRequest(container_id="c", cmd=["sh"], tty=True, stdout=True, stderr=True),
            "tty and stderr",
        ),
        (lambda: m.AttachRequest(container_id="c", tty=True, stderr=True), "tty and stderr"),
        (lambda: m.Mount(container_path="relative/x"), "Mount.container_path must be an absolute"),
        (lambda: container_config(log_path="../escape.log"), "ContainerConfig.log_path"),
        (lambda: container_config(log_path="/abs.log"), "ContainerConfig.log_path"),
        (lambda: container_config(log_path="a/../../b"), "ContainerConfig.log_path"),
        (lambda: container_config(labels={"bad key": "v"}), "invalid key 'bad key'"),
        (lambda: m.PodSandboxConfig(metadata=META, labels={"-x": "v"}), "invalid key '-x'"),
        (lambda: m.LinuxContainerResources(memory_limit_in_bytes=-5), "memory_limit_in_bytes"),
        (lambda: m.LinuxContainerResources(cpu_quota=-2), "cpu_quota"),
        (lambda: m.LinuxContainerResources(oom_score_adj=1001), "oom_score_adj"),
        (lambda: m.LinuxContainerResources(cpuset_cpus="0-"), "cpuset_cpus"),
        (lambda: m.LinuxContainerResources(cpuset_cpus="3-1"), "reversed"),
        (lambda: m.StopContainerRequest(container_id="c", timeout=-1), "timeout"),
        (
            lambda: m.LinuxContainerSecurityContext(run_as_group=m.Int64Value(value=1)),
            "run_as_group is set without",
        ),
        (
            lambda: m.LinuxSandboxSecurityContext(run_as_group=m.Int64Value(value=1)),
            "run_as_group is set without run_as_user",
        ),
        (
            lambda: m.LinuxContainerSecurityContext(
                run_as_user=m.Int64Value(value=1), run_as_username="x"
            ),
            "only one of run_as_user and run_as_username",
        ),
        (
            lambda: m.SecurityProfile(profile_type=m.ProfileType.Localhost),
            "localhost_ref is required",
        ),
        (lambda: m.SecurityProfile(localhost_ref="/x"), "only allowed for Localhost"),
        (lambda: m.PullImageRequest(), "PullImageRequest.image.image is required"),
        (lambda: m.ImageStatusRequest(image=m.ImageSpec()), "ImageStatusRequest.image.image"),
    ],
)
def test_invalid_models_are_refused_naming_the_field(build: Any, match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        build()


@pytest.mark.parametrize(
    "build",
    [
        lambda: container_config(log_path="c/0.log"),
        lambda: container_config(log_path=""),
        lambda: container_config(labels={"io.kubernetes.pod.uid": "x", "a/b": "c", "A_b.c-1": ""}),
        lambda: m.LinuxContainerResources(cpu_quota=-1, memory_swap_limit_in_bytes=-1),
        lambda: m.LinuxContainerResources(cpuset_cpus="0-1,3", oom_score_adj=-999),
        lambda: m.LinuxContainerSecurityContext(
            run_as_username="nobody", run_as_group=m.Int64Value(value=1)
        ),
        lambda: m.SecurityProfile(profile_type=m.ProfileType.Localhost, localhost_ref="/p.json"),
        lambda: m.ExecRequest(container_id="c", cmd=["sh"], tty=True, stdin=True, stdout=True),
        lambda: m.StopPodSandboxRequest(pod_sandbox_id="abc"),
    ],
)
def test_valid_models_are_accepted(build: Any) -> None:
    build()


@pytest.mark.parametrize(
    ("key", "ok"),
    [
        ("app", True),
        ("k8s.io/app", True),
        ("io.kubernetes.container.name", True),
        ("a" * 63, True),
        ("a" * 64, False),
        ("", False),
        ("/x", False),
        ("UPPER.example/x", False),
        ("x/", False),
        ("a b", False),
        ("-a", False),
        ("a-", False),
    ],
)
def test_label_keys(key: str, ok: bool) -> None:
    assert (label_key_problem(key) is None) is ok


def test_wire_decoding_turns_rule_failures_into_invalid_argument() -> None:
    raw = converter.message_class("CreateContainerRequest")(pod_sandbox_id="s").SerializeToString()
    with pytest.raises(InvalidArgument, match="CreateContainerRequest.config is required"):
        converter.decode(m.CreateContainerRequest, raw)


def test_nested_rule_failure_names_the_nested_field() -> None:
    pb = converter.message_class("RunPodSandboxRequest")(
        config={
            "metadata": {"name": "p", "uid": "u", "namespace": "n"},
            "linux": {"security_context": {"run_as_group": {"value": 3}}},
        }
    )
    with pytest.raises(InvalidArgument, match="LinuxSandboxSecurityContext.run_as_group"):
        converter.decode(m.RunPodSandboxRequest, pb)
