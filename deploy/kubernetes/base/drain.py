"""preStop hook of a service pod: wait until the work under way is done, then let Kubernetes send SIGTERM.

By the time this runs the pod is leaving the Service's endpoints, so no new request arrives (after `--settle`
seconds for the Ingress and the interceptor to notice). It then polls the service on 127.0.0.1 until nothing is in
flight: inferences running or waiting (`*_inference_active`, `*_inference_queue_depth` on /metrics) and the
activities of /health/activity except queued jobs and pending webhook deliveries (both stay in the database for the
next worker or the next start; running jobs hold a lease that another worker takes over if this pod dies anyway). It gives up at `--deadline`
seconds, leaving the rest to SIGTERM and terminationGracePeriodSeconds. Standard library only: it runs in the
service image, on a read-only root filesystem.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request

LEFT_FOR_OTHERS = frozenset({"jobs_queued", "webhooks_pending"})
IN_FLIGHT_SUFFIXES = ("_inference_active", "_inference_queue_depth")


def fetch(url: str, token: str | None, timeout: float) -> bytes:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - loopback only
        return response.read()


def in_flight_inferences(exposition: str) -> int:
    """Sum of the in-flight gauges in a Prometheus text exposition."""
    total = 0.0
    for line in exposition.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, _, value = line.rpartition(" ")
        if name.split("{", 1)[0].endswith(IN_FLIGHT_SUFFIXES):
            total += float(value)
    return int(total)


def busy(base_url: str, token: str | None, timeout: float) -> dict[str, int]:
    """What still runs, by name; empty when the pod may stop."""
    counts = json.loads(fetch(f"{base_url}/health/activity", None, timeout))["counts"]
    work = {name: int(count) for name, count in counts.items() if name not in LEFT_FOR_OTHERS and count > 0}
    try:
        inferences = in_flight_inferences(fetch(f"{base_url}/metrics", token, timeout).decode())
    except urllib.error.HTTPError as exc:  # a key that /metrics refuses: wait on the activities alone, and say so
        print(json.dumps({"drain": "metrics unreadable", "status": exc.code}), flush=True)
        inferences = 0
    if inferences:
        work["inferences"] = inferences
    return work


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--deadline", type=float, default=600, help="seconds to wait at most")
    parser.add_argument("--settle", type=float, default=5, help="seconds for the endpoints to drop this pod")
    parser.add_argument("--interval", type=float, default=2)
    args = parser.parse_args(argv)
    keys = [key.strip() for key in os.environ.get("API_KEYS", "").split(",") if key.strip()]
    token = keys[0] if keys else None
    base_url = f"http://127.0.0.1:{args.port}"
    started = time.monotonic()
    time.sleep(args.settle)
    while True:
        try:
            work = busy(base_url, token, timeout=5)
        except (OSError, ValueError, KeyError) as exc:  # not answering: nothing left to wait for
            print(json.dumps({"drain": "service not answering", "error": type(exc).__name__}), flush=True)
            return 0
        waited = round(time.monotonic() - started, 1)
        if not work:
            print(json.dumps({"drain": "idle", "waited_s": waited}), flush=True)
            return 0
        if waited >= args.deadline:
            print(json.dumps({"drain": "deadline", "waited_s": waited, "busy": work}), flush=True)
            return 0
        time.sleep(args.interval)


if __name__ == "__main__":
    sys.exit(main())
