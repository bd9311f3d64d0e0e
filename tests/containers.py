"""The project's container images, built and run with podman for tests.

- `skip_reason()`: why images cannot be built and run here (not Linux, not root, podman,
  runc or debootstrap missing, or `podman info` failing), or None.
- `build_images()`: the stand-in Python base (`scripts/podman-base.sh`, kept between runs), then
  the three images through the Makefile's own targets (`make image-agent DOCKER=podman ...`),
  from the Dockerfiles as they are; once per process, podman's layer cache keeping what did not
  change between runs.
- `Container`: one `podman run`, attached, its output in a log file; the interface of
  `tests.netns.lab.Proc` (`pid` is the container's own process, as seen from here).
- `podman_runner(image)`: a node simulator runner (`NodeSimulator(..., runner=...)`) that runs
  an agent pod as a container of the agent image, in the pod's network namespace, with the
  user and capabilities of the controller's pod spec.

podman is configured by `scripts/containers.conf` (CONTAINERS_CONF): the development VMs refuse
raising rlimits and have hybrid cgroups (runc, not crun), and run no systemd.
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.netns.lab import tail
from tests.nodesim import Runner, SimulatedPod

REPO = Path(__file__).resolve().parents[1]
CONTAINERS_CONF = REPO / "scripts" / "containers.conf"
BASE_SCRIPT = REPO / "scripts" / "podman-base.sh"
IMAGE_REPO = "localhost/vm-dhcp-test"
IMAGE_TAG = "test"
TOOLS = ("podman", "runc", "debootstrap")
COMPONENTS = ("agent", "controller", "webhook")
KUBECONFIG_IN_CONTAINER = "/var/run/vm-dhcp/kubeconfig"
BUILD_TIMEOUT = 900.0
FIGURES: dict[str, str] = {}
"""What the image tests measured (build times, sizes, start-up and stop times), by name."""


class ImageError(RuntimeError):
    """A build or a container did not do what it must (the message carries the output)."""


def podman_env() -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}


def podman(
    *args: str, timeout: float = 60.0, check: bool = True
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        ["podman", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=podman_env(),
        check=False,
    )
    if check and done.returncode != 0:
        raise ImageError(f"podman {' '.join(args)} exited {done.returncode}:\n{done.stderr}")
    return done


@functools.cache
def skip_reason() -> str | None:
    """Why podman cannot build and run the images here, or None when it can."""
    if sys.platform != "linux":
        return "the image tests need Linux (podman)"
    if os.geteuid() != 0:
        return "the image tests need root (podman with network namespaces, debootstrap)"
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return (
            f"missing {', '.join(missing)}: scripts/install-debian-deps.sh installs them (as root)"
        )
    info = podman("info", "--format", "{{.Host.OCIRuntime.Name}}", check=False)
    if info.returncode != 0:
        return f"podman cannot run here: {info.stderr.strip().splitlines()[-1:]}"
    return None


# -- building -------------------------------------------------------------------------------


@dataclass
class Images:
    base: str
    agent: str
    controller: str
    webhook: str
    seconds: dict[str, float] = field(default_factory=dict)
    """Wall time of each build step: base, agent, controller, webhook."""

    def size(self, image: str) -> int:
        return int(podman("image", "inspect", "--format", "{{.Size}}", image).stdout)

    def config(self, image: str, key: str) -> str:
        return podman(
            "image", "inspect", "--format", f"{{{{.Config.{key}}}}}", image
        ).stdout.strip()


def _timed(what: str, argv: Sequence[str], seconds: dict[str, float]) -> str:
    started = time.monotonic()
    done = subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        env=podman_env(),
        cwd=REPO,
        check=False,
    )
    seconds[what] = time.monotonic() - started
    if done.returncode != 0:
        output = "\n".join((done.stdout + done.stderr).splitlines()[-60:])
        raise ImageError(f"building {what} failed ({' '.join(argv)}):\n{output}")
    return done.stdout


@functools.cache
def build_images() -> Images:
    """The stand-in base, then `make image-agent image-controller image-webhook` with
    DOCKER=podman and PYTHON_IMAGE=<the stand-in>: the Dockerfiles as they are.

    The wheel-building stage is tagged too (`.../build:test`, from the same cache), and the
    images these tags named before, if replaced, are removed: runs after source changes
    leave no untagged images behind, and nothing but this suite's own images is touched."""
    name = f"{IMAGE_REPO}/harvester-vm-dhcp-{{}}:{IMAGE_TAG}"
    images = {component: name.format(component) for component in COMPONENTS}
    stage = f"{IMAGE_REPO}/build:{IMAGE_TAG}"
    before = {image: _image_id(image) for image in [*images.values(), stage]}
    seconds: dict[str, float] = {}
    base = _timed("base", [str(BASE_SCRIPT)], seconds).strip().splitlines()[-1]
    # the build's RUN steps reach Debian and PyPI through the host's network (no CNI setup
    # needed), as on a machine where Docker builds with its default bridge
    make = ["make", "--no-print-directory", "DOCKER=podman", f"REPO={IMAGE_REPO}"]
    make += [f"TAG={IMAGE_TAG}", f"PYTHON_IMAGE={base}", "BUILD_ARGS=--network host"]
    for component in COMPONENTS:
        _timed(component, [*make, f"image-{component}"], seconds)
    podman(
        "build", "--quiet", "--network", "host", "--build-arg", f"PYTHON_IMAGE={base}",
        "--target", "build", "-f", str(REPO / "Dockerfile.agent"), "-t", stage, str(REPO),
        timeout=BUILD_TIMEOUT,
    )  # fmt: skip
    for image, old in before.items():
        if old is not None and _image_id(image) != old:
            podman("rmi", old, check=False)  # refused while something still uses it
    return Images(base, images["agent"], images["controller"], images["webhook"], seconds)


def _image_id(image: str) -> str | None:
    found = podman("image", "inspect", "--format", "{{.Id}}", image, check=False)
    return found.stdout.strip() if found.returncode == 0 else None


# -- running --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Security:
    """What a pod's securityContext gives a container: its user and, with `capabilities`
    set, exactly those capabilities (the runtime's default set dropped)."""

    user: str | None = None
    capabilities: tuple[str, ...] | None = None
    read_only: bool = False
    no_new_privileges: bool = False

    def options(self) -> list[str]:
        options: list[str] = []
        if self.user is not None:
            options += ["--user", self.user]
        if self.capabilities is not None:
            options += ["--cap-drop", "all"]
            options += [f"--cap-add={cap}" for cap in self.capabilities]
        if self.read_only:
            options += ["--read-only", "--tmpfs", "/tmp"]
        if self.no_new_privileges:
            options += ["--security-opt", "no-new-privileges"]
        return options


def container_security(
    context: Mapping[str, Any], pod: Mapping[str, Any] | None = None
) -> Security:
    """A Kubernetes securityContext (with the pod's as defaults) as podman options."""
    merged = {**(pod or {}), **context}
    user = merged.get("runAsUser")
    group = merged.get("runAsGroup")
    caps = merged.get("capabilities") or {}
    dropped_all = "ALL" in (caps.get("drop") or [])
    added = tuple(caps.get("add") or [])
    return Security(
        user=None if user is None else f"{user}:{group if group is not None else user}",
        capabilities=added if (added or dropped_all) else None,
        read_only=bool(merged.get("readOnlyRootFilesystem")),
        no_new_privileges=merged.get("allowPrivilegeEscalation") is False,
    )


def container_name(hint: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "_.-" else "-" for c in hint)[:40]
    return f"vmdhcp-{cleaned}-{secrets.token_hex(3)}"


class Container:
    """One attached `podman run --rm`; the interface of `tests.netns.lab.Proc`."""

    def __init__(self, name: str, popen: subprocess.Popen[bytes], log: Path) -> None:
        self.name = name
        self.popen = popen
        self.log = log
        self.started = time.monotonic()
        self._pid: int | None = None

    @classmethod
    def start(
        cls,
        image: str,
        args: Sequence[str],
        log: Path,
        *,
        name: str,
        network: str,
        security: Security = Security(),
        env: Mapping[str, str] | None = None,
        mounts: Mapping[Path, str] | None = None,
        entrypoint: str | None = None,
    ) -> Container:
        argv = ["podman", "run", "--rm", "--name", name, "--network", network, "--pull", "never"]
        argv += security.options()
        for key, value in (env or {}).items():
            argv += ["--env", f"{key}={value}"]
        for source, target in (mounts or {}).items():
            argv += ["--volume", f"{source}:{target}:ro"]
        if entrypoint is not None:
            argv += ["--entrypoint", entrypoint]
        argv += [image, *args]
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=podman_env(),
                start_new_session=True,
            )
        return cls(name, popen, log)

    @property
    def pid(self) -> int:
        """The container's own process, in this (the host's) PID namespace."""
        deadline = time.monotonic() + 30
        while self._pid is None:
            if not self.alive():
                raise ImageError(f"container {self.name} exited\n{self.tail()}")
            found = podman("inspect", "--format", "{{.State.Pid}}", self.name, check=False)
            if found.returncode == 0 and found.stdout.strip() not in ("", "0"):
                self._pid = int(found.stdout)
            elif time.monotonic() > deadline:
                raise ImageError(f"container {self.name} did not start\n{self.tail()}")
            else:
                time.sleep(0.05)
        return self._pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def send_signal(self, sig: int) -> None:
        """Signal the container's process from the host, as the runtime does (SIGSTOP and
        SIGCONT freeze and thaw it)."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def wait(self, timeout: float) -> int:
        code = self.popen.wait(timeout)
        return -(code - 128) if code > 128 else code  # podman: 128 + n for a signal n

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Signal it and wait; SIGKILL when it does not go in `timeout` (returns -9 then)."""
        self.send_signal(sig)
        try:
            return self.wait(timeout)
        except subprocess.TimeoutExpired:
            podman("kill", "--signal", "KILL", self.name, check=False)
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
            return -signal.SIGKILL
        finally:
            podman("rm", "--force", "--ignore", self.name, check=False)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def tail(self, lines: int = 40) -> str:
        return tail(self.log, lines)

    def status(self, key: str) -> str:
        """A line of /proc/<pid>/status of the container's process (Uid, CapEff, ...)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return line.split(":", 1)[1].strip()
        raise ImageError(f"no {key} in /proc/{self.pid}/status")


def run_once(
    image: str, args: Sequence[str], *, entrypoint: str | None = None, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """`podman run --rm` to the end, with no network."""
    argv = ["run", "--rm", "--network", "none", "--pull", "never"]
    if entrypoint is not None:
        argv += ["--entrypoint", entrypoint]
    return podman(*argv, image, *args, timeout=timeout, check=False)


# -- agent pods -----------------------------------------------------------------------------


def agent_pod_security() -> tuple[Security, Security]:
    """(ip-setter, agent): the user and capabilities the controller's agent pod spec gives
    its init container and its agent container."""
    from vmdhcp.controller.config import Image
    from vmdhcp.controller.manifests import agent_pod

    pod = agent_pod(
        pool_namespace="default",
        pool_name="net",
        network_name="default/net",
        server_ip="192.168.0.2",
        cidr="192.168.0.0/24",
        cluster_network="mgmt",
        agent_namespace="default",
        service_account="agent",
        image=Image("agent", "test"),
        dry_run=False,
    )
    spec = pod["spec"]
    context = spec.get("securityContext") or {}
    (init,) = spec["initContainers"]
    (agent,) = spec["containers"]
    return (
        container_security(init["securityContext"], context),
        container_security(agent["securityContext"], context),
    )


def podman_runner(image: str) -> Runner:
    """A node simulator runner: each agent pod's container runs as `image` (which must be the
    image the pod names), in the pod's network namespace, with the agent container's user
    and capabilities from the controller's pod spec, the agent's kubeconfig mounted read-only,
    and the simulator's arguments (`--kubeconfig`, `--enable-cache-dump-api`)."""
    _, agent = agent_pod_security()

    def run(pod: SimulatedPod, kubeconfig: Path) -> Container:
        if pod.image != image:
            raise ImageError(f"pod {pod.name} names image {pod.image}, not the built {image}")
        args = [*pod.args, "--kubeconfig", KUBECONFIG_IN_CONTAINER, "--enable-cache-dump-api"]
        return Container.start(
            image,
            args,
            pod.netns.workdir / "agent.log",
            name=container_name(pod.name),
            network=f"ns:/run/netns/{pod.netns.name}",
            security=agent,
            env={"HOME": "/root", **pod.env},
            mounts={kubeconfig: KUBECONFIG_IN_CONTAINER},
        )

    return run
