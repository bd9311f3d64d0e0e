"""`vm-dhcp-webhook` command line: flags, logging, exit codes.

Bad flags exit 2 with one line on stderr; a cluster that cannot be reached at start exits
1 with one line; SIGTERM and SIGINT stop serving and exit 0.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Sequence

from vmdhcp.errors import VmdhcpError
from vmdhcp.webhook.config import ConfigError, load_config

logger = logging.getLogger("vmdhcp.webhook")


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=logging.DEBUG if level in ("DEBUG", "TRACE") else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # urllib3 warns about each retry of a refused connection; the final error is enough
    quiet = {"kubernetes": logging.WARNING, "urllib3": logging.ERROR, "asyncio": logging.WARNING}
    if level != "TRACE":
        # kopf logs every admission handler call and its plumbing at INFO
        quiet |= {"kopf": logging.WARNING, "aiohttp.access": logging.WARNING}
    for name, threshold in quiet.items():
        logging.getLogger(name).setLevel(threshold)
    logging.getLogger("kopf.objects").addFilter(_drop_refusals)


def _drop_refusals(record: logging.LogRecord) -> bool:
    """kopf logs every refusal as an ERROR ("... failed permanently: ..."); the handlers
    log them already, at INFO. Crashes (with tracebacks) still get through."""
    return "failed permanently:" not in record.getMessage()


def main(argv: Sequence[str] | None = None) -> int:
    try:
        config = load_config(sys.argv[1:] if argv is None else argv, os.environ)
    except ConfigError as exc:
        print(f"vm-dhcp-webhook: error: {exc}", file=sys.stderr)
        return 2
    _setup_logging(config.log_level)

    from vmdhcp import k8s  # kopf and the client are heavy; flags are checked without them
    from vmdhcp.webhook.app import run

    try:
        asyncio.run(run(config))
    except KeyboardInterrupt:
        return 0
    except k8s.ApiError as exc:  # one line, no traceback
        if exc.status == 0:
            logger.error("cannot reach the Kubernetes API server: %s", exc)
        else:
            logger.error("the Kubernetes API server refused: %s", exc)
        return 1
    except VmdhcpError as exc:
        logger.error("%s", exc)
        return 1
    except Exception as exc:
        if type(exc).__name__ != "ConfigException":  # kubernetes: no kubeconfig, not in a pod
            raise
        logger.error("cannot load a Kubernetes configuration: %s", exc)
        return 1
    return 0
