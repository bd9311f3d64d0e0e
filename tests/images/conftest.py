"""Fixtures of the image tests: the three images, built once per session (`images`), and an
API server of their own (`image_cluster`). Without podman (or root) every test here is skipped
with the exact reason (`tests.containers.skip_reason`); a failed build fails them.

At the end of the session the figures the tests measured (build time of each step, image
sizes, start-up and stop times) are printed; `make images-test` shows them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes.client import ApiClient

from tests.cluster import Cluster, ClusterError, cluster_session
from tests.containers import FIGURES, ImageError, Images, build_images, skip_reason


@pytest.fixture(scope="session")
def images() -> Images:
    reason = skip_reason()
    if reason is not None:
        pytest.skip(reason)
    try:
        built = build_images()
    except ImageError as exc:
        pytest.fail(str(exc), pytrace=False)
    for step, seconds in built.seconds.items():
        FIGURES[f"build {step}"] = f"{seconds:.1f} s"
    for component in ("agent", "controller", "webhook"):
        image = getattr(built, component)
        FIGURES[f"size {component}"] = f"{built.size(image) / 1e6:.0f} MB ({image})"
    FIGURES["size stand-in base"] = f"{built.size(built.base) / 1e6:.0f} MB ({built.base})"
    return built


@pytest.fixture(scope="session")
def image_cluster(images: Images, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    rundir = tmp_path_factory.mktemp("k8s-images")
    problem: ClusterError | None = None
    try:
        with cluster_session(rundir) as running:
            yield running
    except ClusterError as exc:
        problem = exc
    if problem is not None:
        pytest.fail(f"cannot provide the test cluster: {problem}", pytrace=False)


@pytest.fixture
def image_api(image_cluster: Cluster) -> Iterator[ApiClient]:
    with image_cluster.api_client() as api:
        yield api


@pytest.fixture
def readable_kubeconfig(image_cluster: Cluster, tmp_path: Path) -> Path:
    """The admin kubeconfig, readable by the images' non-root user (65532) once mounted."""
    copy = tmp_path / "admin.kubeconfig"
    copy.write_text(image_cluster.kubeconfig.read_text())
    copy.chmod(0o644)
    return copy


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FIGURES:
        terminalreporter.section("container images (podman, stand-in base)")
        width = max(len(key) for key in FIGURES)
        for key, value in FIGURES.items():
            terminalreporter.write_line(f"{key:<{width}}  {value}")
