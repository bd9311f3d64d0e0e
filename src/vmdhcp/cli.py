"""Console entry points: `vm-dhcp-controller`, `vm-dhcp-agent`, `vm-dhcp-webhook`.

Each component grows its real command line in its own issue; until then the entry point
exists, says so, and exits 2 so that scripts cannot mistake it for a working component.
"""

import asyncio
import logging
import os
import sys
from collections.abc import Sequence

COMPONENTS = ("controller", "agent", "webhook")


def _not_implemented(component: str) -> int:
    print(f"vm-dhcp-{component}: not implemented yet", file=sys.stderr)
    return 2


def controller_main(argv: Sequence[str] | None = None) -> int:
    return _not_implemented("controller")


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=logging.DEBUG if level in ("DEBUG", "TRACE") else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("kubernetes", "urllib3", "aiohttp.access", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


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
    return _not_implemented("webhook")


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m vmdhcp <component> [args]`."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in COMPONENTS:
        print(f"usage: python -m vmdhcp {{{','.join(COMPONENTS)}}} [options]", file=sys.stderr)
        return 2
    entry = {"controller": controller_main, "agent": agent_main, "webhook": webhook_main}
    return entry[args[0]](args[1:])
