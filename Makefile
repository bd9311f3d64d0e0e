# vm-dhcp: everything a contributor or CI needs, from a fresh clone.
#   make             build the three images (Docker; DOCKER=podman without it)
#   make test        create .venv, install what is missing, lint, type-check, run every test
#   make images-test build the images with podman and run them as a cluster would (in make test)
#   make lint        ruff + mypy only
#   make bench-ipam  IPAM figures (allocation rate, memory, restore time)
#   make bench-core  DHCP protocol core figures (µs per packet)
#   make bench-dhcp  the agent against Kea and dnsmasq under perfdhcp (root;
#                    BENCH_ARGS="--servers agent,kea --halt-poll-ns 200000" and so on)
#   make bench-controller  1,000 VMs on one pool against the test API server, webhook on
#   make bench-webhook  admission cost at 0, 1,000 and 5,000 existing vmnetcfgs
#   make bench-scale  50 pools x 1,000..10,000 VMs through the webhook (issue 15's goals)
#   make bench-ha    agent failover: node crash and image roll-out, a VM probing every 200 ms (root)
#   make fuzz        long property run of the DHCP parser
#   make demo        the whole system on this machine: a VM gets its address (root;
#                    DEMO_KEEP=1 keeps it running until Ctrl-C)
#   make demo-vm NAME=vm-2 MAC=52:54:00:00:00:02   add a VM to that running demo, or run a
#                    VM's DHCP client again (NAME=test-vm)
#   make e2e-kind    the cluster suites against a kind cluster (needs Docker; not in make test)

PYTHON ?= python3

# images, with Docker (buildx) or podman (DOCKER=podman); docs/images.md
#   PYTHON_IMAGE=<image>  another base for the Dockerfiles' PYTHON_IMAGE build argument
#   BUILD_ARGS="..."      more options for the build command (e.g. --network host)
REPO   ?= vm-dhcp
TAG    ?= $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' src/vmdhcp/__init__.py)
ARCH   ?= $(shell uname -m | sed -e 's/x86_64/amd64/' -e 's/aarch64/arm64/')
PUSH   ?= false
DOCKER ?= docker
PYTHON_IMAGE ?=
BUILD_ARGS ?=
IMAGE_CONTROLLER := $(REPO)/harvester-vm-dhcp-controller:$(TAG)
IMAGE_WEBHOOK    := $(REPO)/harvester-vm-dhcp-webhook:$(TAG)
IMAGE_AGENT      := $(REPO)/harvester-vm-dhcp-agent:$(TAG)
ifeq ($(notdir $(DOCKER)),podman)
# podman builds into its own store (no buildx, no --load); PUSH=true pushes afterwards
IMAGE_BUILD = $(DOCKER) build --platform linux/$(ARCH)
image_push = $(if $(filter true,$(PUSH)),&& $(DOCKER) push $(1))
else
IMAGE_BUILD = $(DOCKER) buildx build --platform linux/$(ARCH) $(if $(filter true,$(PUSH)),--push,--load)
image_push =
endif
IMAGE_BUILD += $(if $(PYTHON_IMAGE),--build-arg PYTHON_IMAGE=$(PYTHON_IMAGE)) $(BUILD_ARGS)
KUBECONFIG_FILE ?= $(or $(KUBECONFIG),$(HOME)/.kube/config)
IMAGE_RUN := $(DOCKER) run --rm -it --network host -v $(KUBECONFIG_FILE):/kubeconfig:ro -e KUBECONFIG=/kubeconfig
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=
IMAGES_TEST_ARGS ?=
BENCH_ARGS ?=

.PHONY: images image-controller image-webhook image-agent images-test run-controller run-agent
.PHONY: all test lint fmt unit venv deps bench-ipam bench-core bench-dhcp bench-controller bench-webhook bench-scale bench-ha fuzz demo demo-vm e2e-kind clean kubectl-check

all: images

$(BIN)/python:
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "python >= 3.11 is required ($(PYTHON))" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,lint]'
	touch $@

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

fmt: $(STAMP)
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

# Debian packages for the network tests (real DHCP clients, Kea, dnsmasq, perfdhcp);
# installed when missing and running as root, otherwise those tests skip and say why.
deps:
	scripts/install-debian-deps.sh

# kubectl is not installed by this project (no registry here carries it): say so at once
kubectl-check:
	@command -v kubectl >/dev/null 2>&1 || { echo "make test needs kubectl on PATH (see https://kubernetes.io/docs/tasks/tools/); install it and run make test again" >&2; exit 1; }

# tests/images runs first, in a pytest of its own, and prints the images' figures
test: kubectl-check lint deps images-test
	$(BIN)/pytest --ignore=tests/images $(PYTEST_ARGS)

# the three images built with podman from the Dockerfiles (on a stand-in base made from Debian
# packages, kept between runs) and run as a cluster runs them (docs/images.md); skipped, with
# the reason, where podman cannot run
images-test: $(STAMP) deps
	$(BIN)/pytest tests/images $(IMAGES_TEST_ARGS)

unit: $(STAMP)
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

bench-ipam: $(STAMP)
	$(BIN)/python bench/bench_ipam.py

bench-core: $(STAMP)
	$(BIN)/python bench/bench_core.py

bench-dhcp: $(STAMP) deps
	$(BIN)/python bench/bench_dhcp.py $(BENCH_ARGS)

bench-controller: $(STAMP)
	$(BIN)/python bench/bench_controller.py $(BENCH_ARGS)

bench-webhook: $(STAMP)
	$(BIN)/python bench/bench_webhook.py $(BENCH_ARGS)

bench-scale: $(STAMP)
	$(BIN)/python bench/bench_scale.py $(BENCH_ARGS)

bench-ha: $(STAMP) deps
	$(BIN)/python bench/bench_ha.py $(BENCH_ARGS)

fuzz: $(STAMP)
	VMDHCP_FUZZ_EXAMPLES=$${VMDHCP_FUZZ_EXAMPLES:-100000} $(BIN)/pytest -m fuzz tests/unit/dhcp $(PYTEST_ARGS)

demo: $(STAMP) deps
	$(BIN)/python -m tests.demo

# no prerequisites: a demo is running, so everything it needs is there
demo-vm:
	$(BIN)/python -m tests.demo_vm "$(NAME)" $(MAC)

e2e-kind: $(STAMP)
	scripts/e2e-kind.sh

images: image-controller image-webhook image-agent

image-controller:
	$(IMAGE_BUILD) -f Dockerfile.controller --target controller -t $(IMAGE_CONTROLLER) . $(call image_push,$(IMAGE_CONTROLLER))

image-webhook:
	$(IMAGE_BUILD) -f Dockerfile.controller --target webhook -t $(IMAGE_WEBHOOK) . $(call image_push,$(IMAGE_WEBHOOK))

image-agent:
	$(IMAGE_BUILD) -f Dockerfile.agent -t $(IMAGE_AGENT) . $(call image_push,$(IMAGE_AGENT))

# make run-controller ARGS="--namespace harvester-system --image $(IMAGE_AGENT) --no-leader-election"
run-controller: image-controller
	$(IMAGE_RUN) --user $$(id -u):$$(id -g) $(IMAGE_CONTROLLER) $(ARGS)

# make run-agent ARGS="--ippool-ref default/net-48 --dry-run"
run-agent: image-agent
	$(IMAGE_RUN) --cap-add NET_ADMIN --cap-add NET_RAW --cap-add NET_BIND_SERVICE $(IMAGE_AGENT) $(ARGS)

clean:
	rm -rf $(VENV) build dist src/*.egg-info .mypy_cache .ruff_cache .pytest_cache .hypothesis
