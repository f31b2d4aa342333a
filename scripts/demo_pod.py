"""Run a demo pod through a CRI endpoint with criadapt's typed client and show what happens."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from criadapt import errors
from criadapt import models as m
from criadapt.client import Client

IMAGE = "localhost/criadapt/demo:1.0"


def wait_for(endpoint: str) -> Client:
    deadline = time.monotonic() + 30
    while True:
        client = Client(endpoint, timeout=60)
        try:
            client.version()
            return client
        except errors.CriError:
            client.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def main(endpoint: str, log_directory: str, backend: str) -> None:
    cri = wait_for(endpoint)
    version = cri.version()
    print(f"runtime {version.runtime_name} {version.runtime_version}, CRI {cri.api_version}")
    if backend == "fake":
        cri.pull_image(image=m.ImageSpec(image=IMAGE))
    image = cri.image_status(image=m.ImageSpec(image=IMAGE)).image
    assert image is not None, "the demo image is not in the store"
    print(f"image {IMAGE} is {image.id[:19]} ({image.size} bytes)")
    pod_config = m.PodSandboxConfig(
        metadata=m.PodSandboxMetadata(name="demo", namespace="default", uid="demo-uid"),
        hostname="demo",
        log_directory=log_directory,
        labels={"app": "demo"},
        linux=m.LinuxPodSandboxConfig(
            security_context=m.LinuxSandboxSecurityContext(
                namespace_options=m.NamespaceOption(pid=m.NamespaceMode.CONTAINER)
            )
        ),
    )
    pod = cri.run_pod_sandbox(config=pod_config).pod_sandbox_id
    status = cri.pod_sandbox_status(pod_sandbox_id=pod).status
    assert status is not None
    ip = status.network.ip if status.network else ""
    print(f"pod {pod[:12]}: {status.state.name}, ip {ip or '(none)'}")
    container = cri.create_container(
        pod_sandbox_id=pod,
        config=m.ContainerConfig(
            metadata=m.ContainerMetadata(name="hello"),
            image=m.ImageSpec(image=IMAGE),
            command=["sh", "-c", "echo hello from a criadapt pod on $(hostname)"],
            log_path="hello/0.log",
        ),
        sandbox_config=pod_config,
    ).container_id
    cri.start_container(container_id=container)
    deadline = time.monotonic() + 20
    while True:
        state = cri.container_status(container_id=container).status
        assert state is not None
        if state.state == m.ContainerState.CONTAINER_EXITED or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    print(f"container {container[:12]}: {state.state.name}, exit code {state.exit_code}")
    if state.log_path and Path(state.log_path).exists():
        print(f"CRI log {state.log_path}:")
        print("  " + Path(state.log_path).read_text().strip().replace("\n", "\n  "))
    cri.stop_pod_sandbox(pod_sandbox_id=pod)
    cri.remove_pod_sandbox(pod_sandbox_id=pod)
    cri.remove_image(image=m.ImageSpec(image=IMAGE))
    print(f"pods left: {len(cri.list_pod_sandbox().items)}, "
          f"images left: {len(cri.list_images().images)}")
    cri.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3])
