"""An API server of the chart tests' own, enforcing RBAC and auditing every request of a
service account (``RUNDIR/audit.log``, read by tests/chart/rbac.py), with the third-party CRDs
(KubeVirt, Multus) and stand-ins for the Prometheus Operator's.

It is not the session cluster of tests/integration: that one is shared with tests that
install the project's CRDs themselves, while this one gets them from the chart, and its audit
log must hold the chart's run only. Starting it costs about 1.5 s.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chart.rbac import AUDIT_LOG
from tests.cluster import (
    THIRD_PARTY_CRDS,
    Cluster,
    ClusterError,
    apply_manifests,
    external_kubeconfig,
    load_manifests,
    start_cluster,
    stop_cluster,
    wait_for_crds,
)

DATA = Path(__file__).parent / "data"
MONITORING_CRDS = DATA / "monitoring-crds.yaml"
AUDIT_POLICY = DATA / "audit-policy.yaml"


@pytest.fixture(scope="package")
def rbac_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if external_kubeconfig() is not None:
        pytest.skip("the RBAC tests start their own API server from the k8s-test-env toolkit")
    rundir = tmp_path_factory.mktemp("k8s-rbac")
    try:
        # the toolkit's default authorization mode is RBAC
        cluster = start_cluster(
            rundir,
            f"--audit-log-path={rundir / AUDIT_LOG}",
            f"--audit-policy-file={AUDIT_POLICY}",
        )
    except ClusterError as exc:
        pytest.fail(f"cannot start the RBAC test cluster: {exc}", pytrace=False)
    try:
        with cluster.api_client() as api:
            crds = [*load_manifests(THIRD_PARTY_CRDS), *load_manifests(MONITORING_CRDS)]
            apply_manifests(api, crds)
            wait_for_crds(api, [crd["metadata"]["name"] for crd in crds])
        yield cluster
    finally:
        stop_cluster(cluster)
