"""Pull benchmark: criadapt-runc vs ``skopeo copy`` + ``umoci unpack`` from the same registry.

    python -m benchmarks.pull [--size-mb 50] [--layers 5] [--runs 5] [--warm-runs 30]

Cold pull: an empty store pulls a ~50 MB multi-layer image (gzip) from a local registry on
127.0.0.1, through a real ``criadapt serve`` code path (gRPC server + client, runc backend).
Reference: ``skopeo copy docker://… oci:DIR`` then ``umoci unpack`` of the same image into a
bundle, in fresh folders, same registry, same run. Warm pull: PullImage of the image already
present (manifest round trip, nothing fetched). Medians and p95 over the runs; the ratio is
criadapt's median over the reference's.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from criadapt import models as m
from criadapt.testing.images import big_image
from criadapt.testing.registry import Registry
from criadapt_runc.testing import RuncServer

RESULTS = Path(__file__).resolve().parent / "results"


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def skopeo_umoci(ref: str, layout: Path, bundle: Path) -> None:
    """The reference: copy the image into an OCI layout, unpack it into a bundle."""
    copy = ["skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{ref}"]
    subprocess.run([*copy, f"oci:{layout}:latest"], check=True)
    unpack = ["umoci", "unpack", "--image", f"{layout}:latest", str(bundle)]
    subprocess.run(unpack, check=True, stdout=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=50)
    parser.add_argument("--layers", type=int, default=5)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warm-runs", type=int, default=30)
    args = parser.parse_args()

    image = big_image(args.size_mb, args.layers)
    with tempfile.TemporaryDirectory(prefix="criadapt-bench-") as tmp, Registry() as registry:
        base = Path(tmp)
        ref = registry.push(image, "bench/big", "latest")
        cold: list[float] = []
        reference: list[float] = []
        warm: list[float] = []
        for run in range(args.runs):
            # criadapt: a fresh store each run
            folder = base / f"criadapt-{run}"
            folder.mkdir()
            server = RuncServer(folder)
            client = server.start()
            try:
                spec = m.ImageSpec(image=ref)
                cold.append(timed(lambda: client.pull_image(image=spec)))  # noqa: B023
                if run == 0:
                    for _ in range(args.warm_runs):
                        warm.append(timed(lambda: client.pull_image(image=spec)))  # noqa: B023
            finally:
                server.stop()
                shutil.rmtree(folder, ignore_errors=True)
            # reference: skopeo copy + umoci unpack, fresh folders
            layout = base / f"oci-{run}"
            bundle = base / f"bundle-{run}"

            reference.append(timed(lambda: skopeo_umoci(ref, layout, bundle)))  # noqa: B023
            shutil.rmtree(layout, ignore_errors=True)
            shutil.rmtree(bundle, ignore_errors=True)

    ratio = statistics.median(cold) / statistics.median(reference)
    lines = [
        f"# Pull benchmark, {datetime.date.today()}",
        "",
        f"Machine: {platform.node()} {platform.machine()}, Python {platform.python_version()}; "
        f"image: {image.total_size / 1e6:.1f} MB in {len(image.layers)} gzip layers; "
        f"registry: docker-registry on 127.0.0.1. Command: `python -m benchmarks.pull "
        f"--size-mb {args.size_mb:g} --layers {args.layers} --runs {args.runs} "
        f"--warm-runs {args.warm_runs}`.",
        "",
        "| measurement | runs | median | p95 | ratio (criadapt / reference) | goal |",
        "|---|---|---|---|---|---|",
        f"| cold pull, criadapt-runc | {len(cold)} | {statistics.median(cold):.3f} s "
        f"| {p95(cold):.3f} s | {ratio:.2f}x | ≤ 1.0x |",
        f"| cold, skopeo copy + umoci unpack | {len(reference)} | "
        f"{statistics.median(reference):.3f} s | {p95(reference):.3f} s | 1.00x (reference) | |",
        f"| warm pull (present), criadapt-runc | {len(warm)} | "
        f"{statistics.median(warm) * 1e3:.1f} ms | {p95(warm) * 1e3:.1f} ms | | < 20 ms |",
        "",
    ]
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{datetime.date.today()}-pull.md"
    out.write_text("\n".join(lines))
    print("\n".join(lines))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
