"""Console entry points: `vm-dhcp-controller`, `vm-dhcp-agent`, `vm-dhcp-webhook`.

Each parses its flags into a frozen config (one-line errors, exit 2), sets up logging
and runs its asyncio main.
"""

import asyncio
import logging
import os
import sys
from collections.abc import Sequence

COMPONENTS = ("controller", "agent", "webhook")


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=logging.DEBUG if level in ("DEBUG", "TRACE") else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("kubernetes", "urllib3", "aiohttp.access", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def controller_main(argv: Sequence[str] | None = None) -> int:
    """`vm-dhcp-controller`: IPAM over the custom resources and one agent per IPPool."""
    from vmdhcp.controller.app import run
    from vmdhcp.controller.config import ConfigError, load_config

    try:
        config = load_config(sys.argv[1:] if argv is None else argv, os.environ)
    except ConfigError as exc:
        print(f"vm-dhcp-controller: error: {exc}", file=sys.stderr)
        return 2
    _setup_logging(config.log_level)
    if config.log_level != "TRACE":
        logging.getLogger("kopf").setLevel(logging.WARNING)
    try:
        return asyncio.run(run(config))
    except KeyboardInterrupt:
        return 0


def agent_main(argv: Sequence[str] | None = None) -> int:
    """`vm-dhcp-agent`: the DHCP server of one IPPool."""
    from vmdhcp.agent.app import run
    from vmdhcp.agent.config import ConfigError, load_config

    try:
        config = load_config(sys.argv[1:] if argv is None else argv, os.environ)
    except ConfigError as exc:
        print(f"vm-dhcp-agent: error: {exc}", file=sys.stderr)
        return 2
    _setup_logging(config.log_level)
    try:
        return asyncio.run(run(config))
    except KeyboardInterrupt:
        return 0


def webhook_main(argv: Sequence[str] | None = None) -> int:
    """`vm-dhcp-webhook`: admission webhooks for the custom resources."""
    from vmdhcp.webhook.cli import main as webhook

    return webhook(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m vmdhcp <component> [args]`."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in COMPONENTS:
        print(f"usage: python -m vmdhcp {{{','.join(COMPONENTS)}}} [options]", file=sys.stderr)
        return 2
    entry = {"controller": controller_main, "agent": agent_main, "webhook": webhook_main}
    return entry[args[0]](args[1:])
