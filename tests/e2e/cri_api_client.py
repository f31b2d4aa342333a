"""A CRI client built ONLY from the independent ``cri_api`` stubs (PyPI
``container-runtime-interface-api``) and grpc: no criadapt import at all.

Run as a script, never imported by the tests: ``cri_api`` registers the same protobuf symbols
(``runtime.v1``, ``runtime.v1alpha2``) as criadapt's generated modules, so the two cannot live
in one process.

    python cri_api_client.py SOCKET_PATH API_VERSION SCENARIO

prints one JSON object: step name → ``{"code": "<grpc status name>", ...fields of interest}``.
Scenarios: ``lifecycle`` (sandboxes, runtime status, images, containers), ``runtime_config``
(the v1-only RPC ``RuntimeConfig``), ``garbage`` (unparsable request bytes).
"""

from __future__ import annotations

import importlib
import json
import sys
import uuid
from collections.abc import Callable
from typing import Any

import grpc

TIMEOUT = 10.0
IMAGE = "docker.io/library/busybox:1.36"
MISSING_IMAGE = "example.invalid/criadapt/never-pulled:0.0.0"


def call(method: Callable[..., Any], request: Any) -> tuple[str, Any, str]:
    """(status name, response or None, details) of one unary call."""
    try:
        return "OK", method(request, timeout=TIMEOUT), ""
    except grpc.RpcError as exc:
        return exc.code().name, None, exc.details() or ""


class Recorder:
    def __init__(self) -> None:
        self.steps: dict[str, dict[str, Any]] = {}

    def step(
        self,
        name: str,
        method: Callable[..., Any],
        request: Any,
        fields: Callable[[Any], dict[str, Any]] | None = None,
    ) -> Any:
        code, response, details = call(method, request)
        entry: dict[str, Any] = {"code": code}
        if details:
            entry["details"] = details
        if response is not None and fields is not None:
            entry.update(fields(response))
        self.steps[name] = entry
        return response


def sandbox_fields(pb: Any, sandbox: Any) -> dict[str, Any]:
    return {
        "id": sandbox.id,
        "state": pb.PodSandboxState.Name(sandbox.state),
        "labels": dict(sandbox.labels),
        "annotations": dict(sandbox.annotations),
        "metadata": {
            "name": sandbox.metadata.name,
            "uid": sandbox.metadata.uid,
            "namespace": sandbox.metadata.namespace,
            "attempt": sandbox.metadata.attempt,
        },
    }


def image_fields(image: Any) -> dict[str, Any]:
    return {"id": image.id, "repo_tags": list(image.repo_tags)}


def lifecycle(channel: grpc.Channel, pb: Any, grpc_mod: Any, version: str) -> dict[str, Any]:
    runtime = grpc_mod.RuntimeServiceStub(channel)
    images = grpc_mod.ImageServiceStub(channel)
    rec = Recorder()
    run = uuid.uuid4().hex[:12]

    rec.step(
        "version",
        runtime.Version,
        pb.VersionRequest(version=version),
        lambda r: {
            "version": r.version,
            "runtime_name": r.runtime_name,
            "runtime_version": r.runtime_version,
            "runtime_api_version": r.runtime_api_version,
        },
    )

    def sandbox_config(name: str, app: str) -> Any:
        return pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(
                name=f"{name}-{version}-{run}",
                uid=f"uid-{name}-{run}",
                namespace=f"ns-{run}",
                attempt=1,
            ),
            hostname=name,
            labels={"e2e.criadapt.io/run": run, "app": app, "io.kubernetes.pod.name": name},
            annotations={"note": "spaces and = signs, ünïcode", "e2e/empty": ""},
        )

    config_a = sandbox_config("pod-a", "a")
    rec.steps["config_a"] = {
        "code": "OK",
        "labels": dict(config_a.labels),
        "annotations": dict(config_a.annotations),
        "metadata": {
            "name": config_a.metadata.name,
            "uid": config_a.metadata.uid,
            "namespace": config_a.metadata.namespace,
            "attempt": config_a.metadata.attempt,
        },
    }
    run_a = rec.step(
        "run_a",
        runtime.RunPodSandbox,
        pb.RunPodSandboxRequest(config=config_a),
        lambda r: {"id": r.pod_sandbox_id},
    )
    run_b = rec.step(
        "run_b",
        runtime.RunPodSandbox,
        pb.RunPodSandboxRequest(config=sandbox_config("pod-b", "b")),
        lambda r: {"id": r.pod_sandbox_id},
    )
    id_a = run_a.pod_sandbox_id if run_a is not None else "missing-a"
    id_b = run_b.pod_sandbox_id if run_b is not None else "missing-b"

    def listed(r: Any) -> dict[str, Any]:
        return {"ids": [s.id for s in r.items], "items": [sandbox_fields(pb, s) for s in r.items]}

    rec.step(
        "list_by_labels",
        runtime.ListPodSandbox,
        pb.ListPodSandboxRequest(
            filter=pb.PodSandboxFilter(label_selector={"e2e.criadapt.io/run": run, "app": "b"})
        ),
        listed,
    )
    rec.step(
        "list_by_run_label",
        runtime.ListPodSandbox,
        pb.ListPodSandboxRequest(
            filter=pb.PodSandboxFilter(label_selector={"e2e.criadapt.io/run": run})
        ),
        listed,
    )
    rec.step(
        "list_by_id",
        runtime.ListPodSandbox,
        pb.ListPodSandboxRequest(filter=pb.PodSandboxFilter(id=id_a)),
        listed,
    )
    rec.step(
        "status_a",
        runtime.PodSandboxStatus,
        pb.PodSandboxStatusRequest(pod_sandbox_id=id_a),
        lambda r: sandbox_fields(pb, r.status),
    )
    rec.step("stop_a_1", runtime.StopPodSandbox, pb.StopPodSandboxRequest(pod_sandbox_id=id_a))
    rec.step("stop_a_2", runtime.StopPodSandbox, pb.StopPodSandboxRequest(pod_sandbox_id=id_a))
    rec.step(
        "status_a_stopped",
        runtime.PodSandboxStatus,
        pb.PodSandboxStatusRequest(pod_sandbox_id=id_a),
        lambda r: sandbox_fields(pb, r.status),
    )
    rec.step(
        "remove_a_1", runtime.RemovePodSandbox, pb.RemovePodSandboxRequest(pod_sandbox_id=id_a)
    )
    rec.step(
        "remove_a_2", runtime.RemovePodSandbox, pb.RemovePodSandboxRequest(pod_sandbox_id=id_a)
    )
    rec.step(
        "status_a_removed",
        runtime.PodSandboxStatus,
        pb.PodSandboxStatusRequest(pod_sandbox_id=id_a),
    )
    unknown = uuid.uuid4().hex
    rec.step(
        "stop_unknown", runtime.StopPodSandbox, pb.StopPodSandboxRequest(pod_sandbox_id=unknown)
    )
    rec.step(
        "remove_unknown",
        runtime.RemovePodSandbox,
        pb.RemovePodSandboxRequest(pod_sandbox_id=unknown),
    )

    def container_config(name: str) -> Any:
        return pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name=name, attempt=0),
            image=pb.ImageSpec(image=IMAGE),
            command=["sleep", "3600"],
            labels={"e2e.criadapt.io/run": run},
        )

    rec.step(
        "create_in_unknown_sandbox",
        runtime.CreateContainer,
        pb.CreateContainerRequest(
            pod_sandbox_id=unknown,
            config=container_config("orphan"),
            sandbox_config=sandbox_config("pod-x", "x"),
        ),
    )
    rec.step(
        "run_without_metadata",
        runtime.RunPodSandbox,
        pb.RunPodSandboxRequest(config=pb.PodSandboxConfig(hostname="no-metadata")),
    )
    rec.step(
        "status",
        runtime.Status,
        pb.StatusRequest(),
        lambda r: {"conditions": {c.type: c.status for c in r.status.conditions}},
    )

    # -- ImageService ------------------------------------------------------------------------
    rec.step(
        "pull",
        images.PullImage,
        pb.PullImageRequest(image=pb.ImageSpec(image=IMAGE)),
        lambda r: {"image_ref": r.image_ref},
    )
    rec.step(
        "image_status",
        images.ImageStatus,
        pb.ImageStatusRequest(image=pb.ImageSpec(image=IMAGE)),
        lambda r: {"has_image": r.HasField("image"), **image_fields(r.image)},
    )
    rec.step(
        "list_images",
        images.ListImages,
        pb.ListImagesRequest(),
        lambda r: {"images": [image_fields(i) for i in r.images]},
    )
    rec.step(
        "remove_image_1", images.RemoveImage, pb.RemoveImageRequest(image=pb.ImageSpec(image=IMAGE))
    )
    rec.step(
        "remove_image_2", images.RemoveImage, pb.RemoveImageRequest(image=pb.ImageSpec(image=IMAGE))
    )
    rec.step(
        "image_status_removed",
        images.ImageStatus,
        pb.ImageStatusRequest(image=pb.ImageSpec(image=IMAGE)),
        lambda r: {"has_image": r.HasField("image")},
    )
    rec.step(
        "image_status_missing",
        images.ImageStatus,
        pb.ImageStatusRequest(image=pb.ImageSpec(image=MISSING_IMAGE)),
        lambda r: {"has_image": r.HasField("image")},
    )

    # -- a container's lifecycle ---------------------------------------------------------------
    rec.step(
        "c_pull",
        images.PullImage,
        pb.PullImageRequest(image=pb.ImageSpec(image=IMAGE)),
        lambda r: {"image_ref": r.image_ref},
    )
    config_c = sandbox_config("pod-c", "c")
    run_c = rec.step(
        "c_run_sandbox",
        runtime.RunPodSandbox,
        pb.RunPodSandboxRequest(config=config_c),
        lambda r: {"id": r.pod_sandbox_id},
    )
    id_c = run_c.pod_sandbox_id if run_c is not None else "missing-c"
    created = rec.step(
        "c_create",
        runtime.CreateContainer,
        pb.CreateContainerRequest(
            pod_sandbox_id=id_c, config=container_config("main"), sandbox_config=config_c
        ),
        lambda r: {"id": r.container_id},
    )
    cid = created.container_id if created is not None else "missing-container"

    def container_status(r: Any) -> dict[str, Any]:
        return {
            "id": r.status.id,
            "state": pb.ContainerState.Name(r.status.state),
            "name": r.status.metadata.name,
        }

    rec.step(
        "c_status_created",
        runtime.ContainerStatus,
        pb.ContainerStatusRequest(container_id=cid),
        container_status,
    )
    rec.step("c_start", runtime.StartContainer, pb.StartContainerRequest(container_id=cid))
    rec.step(
        "c_status_running",
        runtime.ContainerStatus,
        pb.ContainerStatusRequest(container_id=cid),
        container_status,
    )
    rec.step(
        "c_list",
        runtime.ListContainers,
        pb.ListContainersRequest(filter=pb.ContainerFilter(pod_sandbox_id=id_c)),
        lambda r: {"ids": [c.id for c in r.containers]},
    )
    rec.step(
        "c_stop_1", runtime.StopContainer, pb.StopContainerRequest(container_id=cid, timeout=1)
    )
    rec.step(
        "c_stop_2", runtime.StopContainer, pb.StopContainerRequest(container_id=cid, timeout=1)
    )
    rec.step(
        "c_status_exited",
        runtime.ContainerStatus,
        pb.ContainerStatusRequest(container_id=cid),
        container_status,
    )
    rec.step("c_remove_1", runtime.RemoveContainer, pb.RemoveContainerRequest(container_id=cid))
    rec.step("c_remove_2", runtime.RemoveContainer, pb.RemoveContainerRequest(container_id=cid))
    rec.step(
        "c_status_removed",
        runtime.ContainerStatus,
        pb.ContainerStatusRequest(container_id=cid),
    )

    # -- clean-up (also shows that sandbox b was still answering) -------------------------------
    for sandbox_id, tag in ((id_b, "b"), (id_c, "c")):
        rec.step(
            f"cleanup_stop_{tag}",
            runtime.StopPodSandbox,
            pb.StopPodSandboxRequest(pod_sandbox_id=sandbox_id),
        )
        rec.step(
            f"cleanup_remove_{tag}",
            runtime.RemovePodSandbox,
            pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id),
        )
    return rec.steps


def runtime_config(channel: grpc.Channel, version: str) -> dict[str, Any]:
    """The v1-only RuntimeConfig, at its path for ``version`` (v1alpha2's stubs lack it)."""
    from cri_api.v1 import api_pb2 as v1

    method = channel.unary_unary(
        f"/runtime.{version}.RuntimeService/RuntimeConfig",
        request_serializer=v1.RuntimeConfigRequest.SerializeToString,
        response_deserializer=v1.RuntimeConfigResponse.FromString,
    )
    rec = Recorder()
    rec.step(
        "runtime_config",
        method,
        v1.RuntimeConfigRequest(),
        lambda r: {"has_linux": r.HasField("linux")},
    )
    return rec.steps


def garbage(channel: grpc.Channel, pb: Any, grpc_mod: Any, version: str) -> dict[str, Any]:
    """Bytes that are no protobuf message, sent with no serializer; then Version still works."""
    raw = channel.unary_unary(f"/runtime.{version}.RuntimeService/RunPodSandbox")
    rec = Recorder()
    rec.step("garbage", raw, b"\xff\xff\xff")
    runtime = grpc_mod.RuntimeServiceStub(channel)
    rec.step(
        "version_after",
        runtime.Version,
        pb.VersionRequest(version=version),
        lambda r: {"runtime_api_version": r.runtime_api_version},
    )
    return rec.steps


def main(argv: list[str]) -> int:
    socket_path, version, scenario = argv
    pb = importlib.import_module(f"cri_api.{version}.api_pb2")
    grpc_mod = importlib.import_module(f"cri_api.{version}.api_pb2_grpc")
    with grpc.insecure_channel(f"unix://{socket_path}") as channel:
        grpc.channel_ready_future(channel).result(timeout=TIMEOUT)
        if scenario == "lifecycle":
            steps = lifecycle(channel, pb, grpc_mod, version)
        elif scenario == "runtime_config":
            steps = runtime_config(channel, version)
        elif scenario == "garbage":
            steps = garbage(channel, pb, grpc_mod, version)
        else:
            raise SystemExit(f"unknown scenario {scenario!r}")
    json.dump(steps, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
