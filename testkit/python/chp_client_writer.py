#!/usr/bin/env python3
"""Write routes through JupyterHub's own client for a while, as a hub spawning servers does.

Usage:
    python chp_client_writer.py --api-url URL --token TOKEN --seconds 60 [--workers 4]

Why: a test that restarts the Kubernetes API server under the proxy must see the proxy through
the client JupyterHub really uses, with its retries: ``ConfigurableHTTPProxy.api_request``
retries connection errors and every status >= 500 with exponential back-off for up to 30 s, and
gives up with an exception after that. So an add or delete this script reports as done is one
JupyterHub would have taken as done.

Each worker adds ``/user/w<worker>-<n>/`` routes to pod-IP targets one after another until the
time is up, and deletes every third route it added right after adding it. One line per outcome:

    ADDED <spec>      add_route returned
    DELETED <spec>    delete_route returned, after the ADDED line of the same spec
    FAILED <spec> <error>    the client gave up (its 30 s of retries ran out) or refused

It exits 0 when every call returned, 1 otherwise.
"""

import argparse
import asyncio
import sys
import time

from jupyterhub.httpclient import JupyterHubHTTPClient
from jupyterhub.proxy import ConfigurableHTTPProxy


async def worker(proxy, worker_id, deadline, failures):
    n = 0
    while time.monotonic() < deadline:
        user = f"w{worker_id}-{n}"
        spec = f"/user/{user}/"
        target = f"http://10.3.{worker_id}.{n % 250 + 1}:8888"
        try:
            await proxy.add_route(spec, target, {"user": user, "server_name": ""})
            print(f"ADDED {spec}", flush=True)
            if n % 3 == 0:
                await proxy.delete_route(spec)
                print(f"DELETED {spec}", flush=True)
        except Exception as e:  # the client's own give-up: reported, not fatal to the others
            failures.append(spec)
            print(f"FAILED {spec} {type(e).__name__}: {e}", flush=True)
        n += 1


async def run(args):
    proxy = ConfigurableHTTPProxy(api_url=args.api_url, auth_token=args.token, should_start=False)
    deadline = time.monotonic() + args.seconds
    failures = []
    try:
        await asyncio.gather(*(worker(proxy, w, deadline, failures) for w in range(args.workers)))
    finally:
        await JupyterHubHTTPClient.loop_instance().close()
    return not failures


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api-url", required=True, help="e.g. http://127.0.0.1:8001")
    parser.add_argument("--token", required=True, help="the proxy's auth token")
    parser.add_argument("--seconds", type=float, default=60, help="how long to keep writing")
    parser.add_argument("--workers", type=int, default=4, help="concurrent writers")
    args = parser.parse_args()
    sys.exit(0 if asyncio.run(run(args)) else 1)


if __name__ == "__main__":
    main()
