"""Run a demo pod through a CRI endpoint with criadapt's typed client, print what happens."""

from __future__ import annotations

import sys
import time

from criadapt import errors
from criadapt import models as m
from criadapt.client import Client


def wait_for(endpoint: str) -> Client:
    deadline = time.monotonic() + 30
    while True:
        client = Client(endpoint, timeout=5)
        try:
            client.version()
            return client
        except (errors.CriError, Exception):
            client.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def main(endpoint: str) -> None:
    cri = wait_for(endpoint)
    version = cri.version()
    print(f"runtime {version.runtime_name} {version.runtime_version}, CRI {cri.api_version}")
    image = cri.pull_image(image=m.ImageSpec(image="busybox")).image_ref
    print(f"pulled busybox as {image}")
    pod_config = m.PodSandboxConfig(
        metadata=m.PodSandboxMetadata(name="demo", namespace="default", uid="demo-uid"),
        hostname="demo",
        log_directory="/tmp/criadapt-demo/logs",
        labels={"app": "demo"},
    )
    pod = cri.run_pod_sandbox(config=pod_config).pod_sandbox_id
    container = cri.create_container(
        pod_sandbox_id=pod,
        config=m.ContainerConfig(
            metadata=m.ContainerMetadata(name="hello"),
            image=m.ImageSpec(image="busybox"),
            command=["echo", "hello from criadapt"],
            log_path="hello/0.log",
        ),
        sandbox_config=pod_config,
    ).container_id
    cri.start_container(container_id=container)
    status = cri.container_status(container_id=container).status
    assert status is not None
    print(f"pod {pod[:12]} container {container[:12]}: {status.state.name}")
    result = cri.exec_sync(container_id=container, cmd=["echo", "hello from criadapt"], timeout=5)
    print(f"exec: exit {result.exit_code}, stdout {result.stdout.decode().strip()!r}")
    cri.stop_pod_sandbox(pod_sandbox_id=pod)
    cri.remove_pod_sandbox(pod_sandbox_id=pod)
    print(f"pods left: {len(cri.list_pod_sandbox().items)}")
    cri.close()


if __name__ == "__main__":
    main(sys.argv[1])
