#!/usr/bin/env python3
"""Drive a CHP-compatible proxy API through JupyterHub's own client class.

Usage:
    python chp_client_roundtrip.py --api-url http://127.0.0.1:PORT --token TOKEN [--host-routing]

Why: JupyterHub talks to the proxy only through
``jupyterhub.proxy.ConfigurableHTTPProxy``. Its ``check_routes`` (run at hub
start, every 300 s, and on ``POST /hub/api/proxy``) reads ``get_all_routes()``
and, keyed by routespec, deletes every route it does not recognise and re-adds
every expected route that is missing or whose target differs; it finds user
routes by ``"user" in data`` and service routes by ``data["service"]``. A proxy
whose routes do not round-trip exactly through this client therefore churns
routes forever. So this script uses the real client, unmodified, and checks:

1. every route added with ``add_route`` comes back from ``get_all_routes()``
   as exactly ``{"routespec": <normalised spec>, "target": <target>,
   "data": <data>}``, under the normalised spec, and no other new key appears
   (a spec that does not round-trip would show up under a different key);
2. ``get_route(spec)`` returns the same dict, for the spec as given and as
   normalised (JupyterHub normalises by adding a trailing ``/``);
3. re-adding a route with the same target is idempotent, and re-adding it with
   a new target and new data replaces it (data is not merged);
4. ``delete_route`` removes a route, and deleting it again does not raise;
5. once everything is deleted, only the routes that were there before remain.

It prints one line per check and exits 0 only if all pass; on the first
failure it prints what was expected and what came back, and exits 1.

In ``--host-routing`` mode (JupyterHub's ``subdomain_host`` setting) specs are
``host.name/path/`` (host first, no leading ``/``), plus the host-less root
``/``; the proxy must have been started in host-routing mode too.
"""

import argparse
import asyncio
import copy
import sys
from urllib.parse import quote

from jupyterhub.httpclient import JupyterHubHTTPClient
from jupyterhub.proxy import ConfigurableHTTPProxy

HOST = "hub.example.org"

# (spec as passed to add_route, spec as JupyterHub normalises it, target, data)
# Specs are in the escaped form JupyterHub itself builds (user names are
# quoted with safe='@~'); the proxy API sees and stores them decoded. Targets
# are what a hub on Kubernetes sends: the hub's service, pod IPs (KubeSpawner's
# default), services in other namespaces, a target path.
PATH_ROUTES = [
    ("/", "/", "http://hub:8081", {"hub": True}),
    ("/has%20space/foo/", "/has%20space/foo/", "http://10.0.1.7:8888", {"extra": True}),
    ("/missing-trailing/slash", "/missing-trailing/slash/",
     "http://10.1.2.3:8888/base/path", {"extra": True}),
    ("/has/@/", "/has/@/", "https://svc.ns:443", {"extra": True}),
    ("/user/" + quote("秀樹") + "/", "/user/" + quote("秀樹") + "/",
     "http://10.0.1.7:8888", {"user": "秀樹", "server_name": ""}),
    ("/user/~x/", "/user/~x/", "http://10.1.2.3:8888/base/path",
     {"user": "~x", "server_name": ""}),
    ("/user/alice/", "/user/alice/", "http://10.0.1.7:8888",
     {"user": "alice", "server_name": ""}),
    ("/user/alice/foo/", "/user/alice/foo/", "http://10.1.2.3:8888/base/path",
     {"user": "alice", "server_name": "foo"}),
    ("/services/x/", "/services/x/", "https://svc.ns:443", {"service": "x"}),
]


def host_routes():
    """The same routes in JupyterHub's host-routing form: host.name/path/.

    The root ``/`` stays host-less; a bare ``host.name/`` route is added too.
    """
    routes = [("/", "/", "http://hub:8081", {"hub": True}),
              (HOST + "/", HOST + "/", "http://hub:8081", {"hub": True})]
    for spec, normal, target, data in PATH_ROUTES:
        if spec == "/":
            continue
        host = "alice." + HOST if "/alice/" in spec else HOST
        routes.append((host + spec, host + normal, target, data))
    routes.append(("alice." + HOST + "/no-slash", "alice." + HOST + "/no-slash/",
                   "https://svc.ns:443", {"extra": True}))
    return routes


class CheckFailed(Exception):
    pass


def ok(message):
    print(f"ok   {message}", flush=True)


def expect_equal(what, got, want):
    if got != want:
        raise CheckFailed(f"{what}:\n       expected {want!r}\n       got      {got!r}")


def comparable(route):
    """A route dict as returned by the client, minus the keys CHP invents.

    configurable-http-proxy adds ``last_activity`` to every route's data and,
    with ``--host-routing``, ``host`` (the spec's first segment) to every
    non-root route's data; JupyterHub 6.1's client passes both through into
    ``data``. These are the only keys ignored here, and ``host`` only when it
    equals the spec's own host. (Our proxy need not add either; it never
    invents last_activity.)
    """
    if route is None:
        return None
    route = copy.deepcopy(route)
    data = route.get("data")
    if isinstance(data, dict):
        data.pop("last_activity", None)
        spec = route.get("routespec", "")
        if not spec.startswith("/") and data.get("host") == spec.split("/")[0]:
            del data["host"]
    return route


def expected(normal, target, data):
    return {"routespec": normal, "target": target, "data": data}


def make_proxy(api_url, token, host_routing):
    """JupyterHub's client configured as for an externally managed proxy.

    Outside a running hub only api_url, auth_token and should_start=False are
    needed for add/get/delete (``app``/``hub`` are used only by start,
    check_routes and extra_routes validation). The hub sets
    ``host_routing=bool(JupyterHub.subdomain_host)`` on the instance; we set it
    directly.
    """
    return ConfigurableHTTPProxy(api_url=api_url, auth_token=token,
                                 should_start=False, host_routing=host_routing)


async def add(proxy, spec, target, data):
    # add_route mutates its data argument (adds target and jupyterhub keys),
    # so always hand it a copy.
    await proxy.add_route(spec, target, copy.deepcopy(data))


async def check_added(proxy, routes, before):
    """get_all_routes() holds exactly the pre-existing routes plus ours."""
    all_routes = await proxy.get_all_routes()
    want_keys = set(before) | {normal for _, normal, _, _ in routes}
    expect_equal("get_all_routes() keys", sorted(all_routes), sorted(want_keys))
    ok(f"get_all_routes() lists {len(routes)} added routes under their normalised specs")
    for spec, normal, target, data in routes:
        expect_equal(f"get_all_routes()[{normal!r}]",
                     comparable(all_routes[normal]), expected(normal, target, data))
        ok(f"round-trip {spec!r} -> {normal!r} target={target} data={data}")
    for key in ("last_activity", "host"):
        seen = sum(key in r["data"] for r in all_routes.values())
        ok(f"{key!r} in data of {seen} routes{' (ignored)' if seen else ''}")


async def check_get_route(proxy, routes):
    for spec, normal, target, data in routes:
        for asked in dict.fromkeys((spec, normal)):
            got = comparable(await proxy.get_route(asked))
            expect_equal(f"get_route({asked!r})", got, expected(normal, target, data))
        ok(f"get_route({spec!r}) matches")


async def check_replace(proxy, routes, before):
    """Re-adding: same route is idempotent; new target + data replaces."""
    spec, normal, target, data = next(r for r in routes if "user" in r[3])
    await add(proxy, spec, target, data)
    expect_equal(f"get_route({spec!r}) after identical re-add",
                 comparable(await proxy.get_route(spec)), expected(normal, target, data))
    ok(f"re-adding {spec!r} unchanged is idempotent")

    new_target, new_data = plain(args_plain, "https://svc.ns:443"), {"extra": True}
    await add(proxy, spec, new_target, new_data)
    expect_equal(f"get_route({spec!r}) after replacing",
                 comparable(await proxy.get_route(spec)),
                 expected(normal, new_target, new_data))
    count = len(await proxy.get_all_routes())
    expect_equal("route count after replacing", count, len(before) + len(routes))
    ok(f"re-adding {spec!r} with a new target replaces it (data not merged)")


async def check_delete(proxy, routes, before):
    for spec, normal, _, _ in routes:
        await proxy.delete_route(spec)
        expect_equal(f"get_route({normal!r}) after delete",
                     await proxy.get_route(normal), None)
        ok(f"delete_route({spec!r}) removes it")
        await proxy.delete_route(spec)
        ok(f"delete_route({spec!r}) again does not raise")
    remaining = await proxy.get_all_routes()
    expect_equal("get_all_routes() keys after deleting all", sorted(remaining), sorted(before))
    ok(f"after deleting all, get_all_routes() holds only the {len(before)} pre-existing routes")


async def remove_leftovers(proxy, routes):
    """Delete this driver's routes left by an interrupted run; return the rest."""
    before = await proxy.get_all_routes()
    leftovers = sorted(set(before) & {normal for _, normal, _, _ in routes})
    for spec in leftovers:
        await proxy.delete_route(spec)
        del before[spec]
    if leftovers:
        ok(f"removed {len(leftovers)} routes left by an earlier run: {leftovers}")
    return before


def plain(on, target):
    """With --plain-http, an https target as the same service's plain HTTP port."""
    return target.replace("https://svc.ns:443", "http://svc.ns:8080") if on else target


args_plain = False


async def run(args):
    global args_plain
    args_plain = args.plain_http
    proxy = make_proxy(args.api_url, args.token, args.host_routing)
    routes = host_routes() if args.host_routing else PATH_ROUTES
    routes = [(spec, normal, plain(args.plain_http, target), data) for spec, normal, target, data in routes]
    mode = "host routing" if args.host_routing else "path routing"
    print(f"driving {args.api_url} with jupyterhub.proxy.ConfigurableHTTPProxy ({mode})")
    try:
        before = await remove_leftovers(proxy, routes)
        ok(f"get_all_routes() works; {len(before)} pre-existing JupyterHub routes")
        for spec, _, target, data in routes:
            await add(proxy, spec, target, data)
        ok(f"add_route accepted {len(routes)} routes")
        await check_added(proxy, routes, before)
        await check_get_route(proxy, routes)
        await check_replace(proxy, routes, before)
        await check_delete(proxy, routes, before)
    finally:
        await JupyterHubHTTPClient.loop_instance().close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api-url", required=True, help="e.g. http://127.0.0.1:8001")
    parser.add_argument("--token", required=True, help="the proxy's auth token")
    parser.add_argument("--host-routing", action="store_true",
                        help="use host.name/path/ specs (proxy must host-route too)")
    parser.add_argument("--plain-http", action="store_true",
                        help="http targets only (the Gateway API backend refuses https ones)")
    args = parser.parse_args()
    try:
        asyncio.run(run(args))
    except CheckFailed as e:
        print(f"FAIL {e}", flush=True)
        return 1
    except Exception as e:  # e.g. aiohttp.ClientResponseError from the client
        print(f"FAIL {type(e).__name__}: {e}", flush=True)
        return 1
    print("PASS all checks", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
