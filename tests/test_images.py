"""What can be checked of the container images by reading the Dockerfiles (tests/images builds
and runs them, with podman, where it can run): the Dockerfiles' base
images are pinned, their entry points are console scripts of the package, what they COPY
exists and is not excluded by .dockerignore, the wheel is built by one identical stage in
both files, the controller and webhook run as a numeric non-root user, the agent carries
iproute2, and the chart's defaults match the images (ports, names, targets)."""

from __future__ import annotations

import fnmatch
import importlib
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCKERFILES = ("Dockerfile.controller", "Dockerfile.agent")
EXACT_VERSION = re.compile(r"^v?\d+\.\d+\.\d+(?:[-.+][\w.-]+)?$")
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def split_reference(reference: str) -> tuple[str, str | None, str | None]:
    """`registry[:port]/name[:tag][@digest]` -> (name, tag, digest)."""
    name, _, digest = reference.partition("@")
    colon = name.rfind(":")
    if colon > name.rfind("/"):
        return name[:colon], name[colon + 1 :], digest or None
    return name, None, digest or None


def is_pinned(reference: str) -> bool:
    """By a sha256 digest, or by a tag starting with an exact version (3.11.13-slim-bookworm)."""
    _, tag, digest = split_reference(reference)
    if digest is not None:
        return bool(DIGEST.match(digest))
    return tag is not None and bool(EXACT_VERSION.match(tag.split("-", 1)[0]))


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for key, args in self.instructions if key == keyword]


@dataclass
class Dockerfile:
    args: dict[str, str]
    """ARG defaults declared before the first FROM."""
    stages: list[Stage]

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)

    def resolve(self, text: str) -> str:
        return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: self.args[m[1] or m[2]], text)


def parse(path: Path) -> Dockerfile:
    """Instructions (continuation lines joined, comments dropped), grouped into stages."""
    lines: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        if raw.lstrip().startswith("#") or not raw.strip():
            continue
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1] + " "
            continue
        lines.append(pending + raw)
        pending = ""
    assert not pending, f"{path.name}: a continuation line ends the file"
    dockerfile = Dockerfile({}, [])
    for line in lines:
        keyword, _, rest = line.strip().partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            parts = rest.split()
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            dockerfile.stages.append(Stage(parts[0], name))
        elif keyword == "ARG" and not dockerfile.stages:
            key, _, default = rest.partition("=")
            dockerfile.args[key] = default
        else:
            assert dockerfile.stages, f"{path.name}: {keyword} before FROM"
            dockerfile.stages[-1].instructions.append((keyword, rest))
    return dockerfile


def console_scripts() -> dict[str, str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    scripts: dict[str, str] = project["project"]["scripts"]
    return scripts


def dockerignored(relative: str) -> bool:
    """Docker's rule: the last matching pattern wins; `!` re-includes; a pattern matches a
    path or any of its parent folders."""
    ignored = False
    for raw in (REPO / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        parts = relative.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatchcase(p, pattern.replace("**", "*")) for p in prefixes):
            ignored = not negate
    return ignored


@pytest.fixture(params=DOCKERFILES)
def dockerfile(request: pytest.FixtureRequest) -> tuple[str, Dockerfile]:
    name: str = request.param
    return name, parse(REPO / name)


def test_base_images_are_pinned(dockerfile: tuple[str, Dockerfile]) -> None:
    name, parsed = dockerfile
    stage_names = {s.name for s in parsed.stages}
    for stage in parsed.stages:
        if stage.base in stage_names:
            continue  # built on an earlier stage
        image = parsed.resolve(stage.base)
        assert is_pinned(image), f"{name}: FROM {image} is pinned neither by digest nor version"


@pytest.mark.parametrize(
    ("reference", "pinned"),
    [
        ("python:3.11.13-slim-bookworm", True),
        ("registry.example:5000/library/python:3.11.13-slim", True),
        ("python@sha256:" + "a" * 64, True),
        ("python:3.11-slim-bookworm", False),
        ("python:3-slim", False),
        ("python:latest", False),
        ("python", False),
        ("registry.example:5000/python", False),
    ],
)
def test_the_pin_check_itself(reference: str, pinned: bool) -> None:
    assert is_pinned(reference) is pinned


def test_entry_points_are_console_scripts_of_the_package(
    dockerfile: tuple[str, Dockerfile],
) -> None:
    name, parsed = dockerfile
    scripts = console_scripts()
    entry_points = [s.all("ENTRYPOINT") for s in parsed.stages]
    assert any(entry_points), f"{name} has no ENTRYPOINT"
    for found in entry_points:
        for text in found:
            program = yaml.safe_load(text)[0]  # the exec form is a JSON array
            assert program in scripts, f"{name}: {program} is not a console script"
            module, _, function = scripts[program].partition(":")
            assert callable(getattr(importlib.import_module(module), function))


def test_copied_files_exist_and_reach_the_build_context(
    dockerfile: tuple[str, Dockerfile],
) -> None:
    name, parsed = dockerfile
    copied = 0
    for stage in parsed.stages:
        for args in stage.all("COPY"):
            if args.startswith("--from="):
                source_stage = args.split()[0].split("=", 1)[1]
                assert source_stage in {s.name for s in parsed.stages}, f"{name}: COPY {args}"
                continue
            *sources, _destination = args.split()
            for source in sources:
                path = REPO / source
                assert path.exists(), f"{name}: COPY {source}: no such file"
                assert not dockerignored(source), f"{name}: COPY {source}: .dockerignore drops it"
                copied += 1
    assert copied >= 3  # pyproject.toml, README.md (the package's readme), src


def test_dockerignore_keeps_the_context_small() -> None:
    for kept in ("pyproject.toml", "README.md", "src/vmdhcp/cli.py", "src/vmdhcp/crds"):
        assert not dockerignored(kept), kept
    for dropped in (".venv", ".git", "tests/test_images.py", "chart/values.yaml", "bench"):
        assert dockerignored(dropped), dropped
    assert dockerignored("src/vmdhcp/__pycache__/cli.cpython-311.pyc")


def test_the_wheel_is_built_by_one_identical_stage() -> None:
    """Both images copy a virtualenv from a `build` stage that is the same in both files, so
    a shared builder cache builds the wheel and its dependencies once."""
    builds = [parse(REPO / name).stage("build") for name in DOCKERFILES]
    assert builds[0] == builds[1]
    (wheel,) = builds[0].all("RUN")
    assert "pip wheel" in wheel
    assert "--no-index" in wheel  # the virtualenv is installed from those wheels only
    for name in DOCKERFILES:
        final = parse(REPO / name).stages[-1]
        assert not [run for run in final.all("RUN") if "pip" in run], name


def test_controller_and_webhook_images_run_as_a_numeric_non_root_user() -> None:
    parsed = parse(REPO / "Dockerfile.controller")
    assert [s.name for s in parsed.stages][-1] == "controller"  # the default target
    runtime = parsed.stage("runtime")
    (user,) = runtime.all("USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit()
    assert int(uid) != 0
    assert gid.isdigit()
    assert int(gid) != 0
    for target in ("controller", "webhook"):
        stage = parsed.stage(target)
        assert stage.base == "runtime"
        assert not stage.all("USER")
    values = yaml.safe_load((REPO / "chart" / "values.yaml").read_text())
    assert values["podSecurityContext"]["runAsUser"] == int(uid)
    assert values["podSecurityContext"]["runAsNonRoot"] is True


def test_agent_image_carries_iproute2_for_the_ip_setter() -> None:
    final = parse(REPO / "Dockerfile.agent").stages[-1]
    installs = " ".join(final.all("RUN"))
    assert re.search(r"apt-get install [^&]*\biproute2\b", installs)
    assert "rm -rf /var/lib/apt/lists" in installs
    assert final.all("ENTRYPOINT") == ['["vm-dhcp-agent"]']
    # the controller's ip-setter runs `/bin/sh -c 'ip address ...'` in this image
    from vmdhcp.controller.manifests import SET_IP_SCRIPT

    assert "ip address add" in SET_IP_SCRIPT


def test_images_expose_what_the_chart_expects() -> None:
    controller = parse(REPO / "Dockerfile.controller")
    agent = parse(REPO / "Dockerfile.agent")
    values = yaml.safe_load((REPO / "chart" / "values.yaml").read_text())
    assert controller.stage("controller").all("EXPOSE") == ["8080"]
    assert controller.stage("webhook").all("EXPOSE") == [str(values["webhook"]["httpsPort"])]
    assert agent.stages[-1].all("EXPOSE") == ["67/udp 8080"]
    assert controller.stage("webhook").all("ENTRYPOINT") == ['["vm-dhcp-webhook"]']
    assert controller.stage("controller").all("ENTRYPOINT") == ['["vm-dhcp-controller"]']
    for key, image in (
        ("image", "harvester-vm-dhcp-controller"),
        ("webhook", "harvester-vm-dhcp-webhook"),
        ("agent", "harvester-vm-dhcp-agent"),
    ):
        repository = (values[key]["image"] if key != "image" else values["image"])["repository"]
        assert repository.rsplit("/", 1)[-1] == image
