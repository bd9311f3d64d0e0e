#!/usr/bin/env bash
# The cluster-facing suites against a kind cluster, for users with Docker (not part of
# `make test`: no Docker engine runs on the project's machines, so this script is untested
# there). Creates the cluster if missing, loads the three images, installs the stand-in
# KubeVirt/Multus CRDs and the chart, then runs the suites that only need an API server
# through the same fixtures (VMDHCP_TEST_KUBECONFIG).
set -euo pipefail
cd "$(dirname "$0")/.."
CLUSTER=${KIND_CLUSTER:-vm-dhcp-e2e}
REPO=${REPO:-vm-dhcp}
TAG=${TAG:-e2e}
command -v kind >/dev/null || { echo "kind is required (https://kind.sigs.k8s.io)" >&2; exit 1; }
command -v helm >/dev/null || { echo "helm is required" >&2; exit 1; }
kind get clusters | grep -qx "$CLUSTER" || kind create cluster --name "$CLUSTER"
KUBECONFIG_FILE=$(mktemp)
kind get kubeconfig --name "$CLUSTER" > "$KUBECONFIG_FILE"
make images REPO="$REPO" TAG="$TAG"
for image in controller webhook agent; do
  kind load docker-image --name "$CLUSTER" "$REPO/harvester-vm-dhcp-$image:$TAG"
done
kubectl --kubeconfig "$KUBECONFIG_FILE" apply -f tests/data/crds/third-party.yaml
helm --kubeconfig "$KUBECONFIG_FILE" upgrade --install harvester-vm-dhcp-controller ./chart \
  --namespace harvester-system --create-namespace \
  --set image.repository="$REPO/harvester-vm-dhcp-controller",image.tag="$TAG" \
  --set webhook.image.repository="$REPO/harvester-vm-dhcp-webhook",webhook.image.tag="$TAG" \
  --set agent.image.repository="$REPO/harvester-vm-dhcp-agent",agent.image.tag="$TAG" --wait
VMDHCP_TEST_KUBECONFIG="$KUBECONFIG_FILE" .venv/bin/pytest tests/integration/test_crds.py \
  tests/integration/test_agent_kubernetes.py -k "not api_server_is_away" "$@"
