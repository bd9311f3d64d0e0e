"""A node simulator: the nodes, scheduler, kubelets and node lifecycle controller the test
API server does not have, for agent pods.

It creates Node objects (`kubernetes.io/hostname`, and the cluster network's label
`network.harvesterhci.io/<cluster network>: "true"` the agents' node affinity asks for),
watches the agent pods the controller creates (label
`network.harvesterhci.io/vm-dhcp-controller=agent` in the agent namespace) and plays:

- **the scheduler**: a pending pod is bound (`spec.nodeName`) to a node that fits its
  required node affinity, is not cordoned and has no untolerated NoSchedule taint,
  preferring nodes without pods its anti-affinity names (`scheduling.choose_node`);
- **each node's kubelet**: a bound pod is a network namespace of a `tests.netns.lab.Lab`,
  attached to the lab's bridge (the NAD's VM network) through an interface named `eth1`, as
  Multus would; the init container's command (`ip-setter`) runs in it, then the agent
  (`runner`: by default the venv's `vm-dhcp-agent` with the pod's args and env and a
  kubeconfig for the agent's service account; the API server's loopback port is forwarded
  into the namespace, so the agent reaches `https://127.0.0.1:<port>` as it would through
  the pod network). The pod's status (phase, Ready, containerStatuses with the image and
  restart count) follows the agent's real `/readyz`; an agent that dies is restarted, as
  with `restartPolicy: Always`. A deleted pod is stopped gracefully (SIGTERM, its grace
  period) before it goes: the kubelet's finalizer holds it Terminating meanwhile;
- **the node lifecycle controller**: a node that stops reporting (crashed, or cut off from
  the API server) is marked NotReady and tainted unreachable after `node_grace`, and its
  pods not Ready; its deleted pods stay Terminating until it comes back.

For tests: `crash_node` (agents frozen, links down, kubelet silent), `cut_off` (no API
server, still on the VM network), `recover_node`, `cordon` and `drain` (evictions honouring
PodDisruptionBudgets), `kill_agent`. "VMs" are further namespaces on the same bridge running
a real DHCP client with the VM's MAC (`Lab.add_client(mac)`). Nothing here needs a container
runtime; it is also how a contributor watches the whole system work without a cluster
(`make demo`).
"""

from tests.nodesim.forward import PortForward, api_port, listen_in_namespace
from tests.nodesim.kubelet import (
    KUBELET_FINALIZER,
    AgentProcess,
    Runner,
    SimulatedPod,
    run_in_namespace,
)
from tests.nodesim.nodes import SimulatedNode
from tests.nodesim.simulator import NodeSimulator

__all__ = [
    "KUBELET_FINALIZER",
    "AgentProcess",
    "NodeSimulator",
    "PortForward",
    "Runner",
    "SimulatedNode",
    "SimulatedPod",
    "api_port",
    "listen_in_namespace",
    "run_in_namespace",
]
