#!/usr/bin/env python3
"""Small helpers for bench/run.sh and bench/kube.sh (Python 3 standard library only).

Every network call here goes to 127.0.0.1 only, and every loop is bounded
in count and in time.

Subcommands:
  freeports N                    print N free TCP ports on 127.0.0.1
  wait-ready PORT PATH SECS      poll GET PATH on 127.0.0.1:PORT (with the token
                                 from BENCH_TOKEN) until 200, at most SECS seconds
  ping PORT                      print the status and body of GET /ping (no token)
  load PORT N [CONNS]            POST N new routes over CONNS keep-alive connections;
                                 every answer must be 201
  count PORT                     print how many routes GET /api/routes lists
  delete-all PORT [CONNS] [DEPTH]
                                 DELETE every listed route over CONNS connections, DEPTH
                                 requests pipelined; every answer must be 204; print how many
  has PORT SPEC                  exit 0 if GET /api/routes/SPEC answers 200
  rss PID                        print VmRSS in MiB of PID plus its descendants
  wrk-parse FILE                 print key=value lines parsed from a wrk output file
  report RAW_TSV META_ENV OUT_MD render the markdown summary (medians, ratios, PASS/FAIL)

For bench/kube.sh:
  time-ready PORT SECS LOG -- CMD...
                                 start CMD (output to LOG), poll GET /readyz on
                                 127.0.0.1:PORT every 10 ms until 200, print the
                                 milliseconds from spawn to that 200, stop CMD
  kube-list URL REPS             fetch the VirtualServices of namespace hub from the API
                                 server at URL (a loopback http:// URL) as the baseline
                                 does (label selector, pages of 500), without decoding
                                 them, REPS times; print the median milliseconds
  kube-report RAW_TSV META_ENV OUT_MD
                                 render kube.sh's markdown summary
"""

import http.client
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse

HOST = "127.0.0.1"  # the only address this tool ever talks to


def token():
    t = os.environ.get("BENCH_TOKEN", "")
    if not t:
        sys.exit("benchtool: BENCH_TOKEN is not set")
    return t


def auth_headers():
    return {"Authorization": "token " + token()}


def die(msg):
    print("benchtool: " + msg, file=sys.stderr)
    sys.exit(1)


# --------------------------------------------------------------------------- ports

def cmd_freeports(n):
    socks = []
    try:
        for _ in range(int(n)):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((HOST, 0))
            socks.append(s)
        print(" ".join(str(s.getsockname()[1]) for s in socks))
    finally:
        for s in socks:
            s.close()


# --------------------------------------------------------------------------- readiness

def get(port, path, headers=None, timeout=5.0):
    conn = http.client.HTTPConnection(HOST, int(port), timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def cmd_wait_ready(port, path, secs):
    deadline = time.monotonic() + float(secs)
    last = "no attempt"
    for _ in range(10000):  # bounded in count as well as time
        if time.monotonic() > deadline:
            break
        try:
            status, _ = get(port, path, auth_headers(), timeout=2.0)
            if status == 200:
                return
            last = "HTTP %d" % status
        except OSError as e:
            last = repr(e)
        time.sleep(0.1)
    die("127.0.0.1:%s%s not ready after %ss (last: %s)" % (port, path, secs, last))


def cmd_ping(port):
    try:
        status, body = get(port, "/ping", timeout=5.0)
        print("%d %s" % (status, body.decode("utf-8", "replace").strip()))
    except OSError as e:
        print("ERR %r" % (e,))


# --------------------------------------------------------------------------- loading

def route_body():
    return json.dumps({"target": "http://10.0.0.7:8888", "jupyterhub": True}).encode()


def cmd_load(port, n, conns="4"):
    n, conns = int(n), max(1, int(conns))
    body = route_body()
    hdrs = dict(auth_headers())
    hdrs["Content-Type"] = "application/json"
    errors = []
    lock = threading.Lock()
    deadline = time.monotonic() + 300.0

    def worker(w):
        conn = None
        for i in range(w, n, conns):
            if time.monotonic() > deadline:
                with lock:
                    errors.append("loader timed out")
                return
            path = "/api/routes/user/load-%05d" % i
            for attempt in range(3):  # only reconnects a dropped keep-alive; never re-counts
                try:
                    if conn is None:
                        conn = http.client.HTTPConnection(HOST, int(port), timeout=30.0)
                    conn.request("POST", path, body=body, headers=hdrs)
                    r = conn.getresponse()
                    r.read()
                    if r.status != 201:
                        with lock:
                            errors.append("POST %s -> HTTP %d" % (path, r.status))
                        return
                    if (r.getheader("Connection") or "").lower() == "close":
                        conn.close()
                        conn = None
                    break
                except (OSError, http.client.HTTPException) as e:
                    if conn is not None:
                        conn.close()
                    conn = None
                    if attempt == 2:
                        with lock:
                            errors.append("POST %s failed: %r" % (path, e))
                        return
        if conn is not None:
            conn.close()

    t0 = time.monotonic()
    threads = [threading.Thread(target=worker, args=(w,)) for w in range(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    dt = time.monotonic() - t0
    if errors:
        die("load failed: " + "; ".join(errors[:5]))
    print("%.2f" % dt)


def list_routes(port):
    status, body = get(port, "/api/routes", auth_headers(), timeout=60.0)
    if status != 200:
        die("GET /api/routes -> HTTP %d" % status)
    obj = json.loads(body)
    if not isinstance(obj, dict):
        die("GET /api/routes did not answer a JSON object")
    return obj


def cmd_count(port):
    print(len(list_routes(port)))


def cmd_delete_all(port, conns="8", depth="32"):
    """DELETE every listed route, over CONNS connections with DEPTH requests pipelined on
    each: every answer must be 204. Prints how many were deleted."""
    import asyncio

    specs = sorted(list_routes(port))
    conns, depth = max(1, int(conns)), max(1, int(depth))
    auth = "".join("%s: %s\r\n" % kv for kv in auth_headers().items())

    async def answer(reader):
        status = int((await reader.readline()).split()[1])
        length = 0
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        await reader.readexactly(length)
        return status

    async def worker(chunk):
        reader, writer = await asyncio.open_connection(HOST, int(port))
        wrong = []
        for i in range(0, len(chunk), depth):
            batch = chunk[i:i + depth]
            writer.write("".join(
                "DELETE /api/routes%s HTTP/1.1\r\nHost: %s\r\n%s\r\n"
                % (urllib.parse.quote(spec, safe="/"), HOST, auth) for spec in batch).encode())
            await writer.drain()
            for spec in batch:
                status = await answer(reader)
                if status != 204:
                    wrong.append("DELETE %s -> HTTP %d" % (spec, status))
        writer.close()
        return wrong

    async def run():
        tasks = [worker(specs[w::conns]) for w in range(conns)]
        return await asyncio.wait_for(asyncio.gather(*tasks), 300.0)

    wrong = [w for ws in asyncio.run(run()) for w in ws]
    if wrong:
        die("%d of %d DELETEs not answered 204: %s" % (len(wrong), len(specs), "; ".join(wrong[:5])))
    print(len(specs))


def cmd_has(port, spec):
    status, _ = get(port, "/api/routes" + spec, auth_headers())
    sys.exit(0 if status == 200 else 1)


# --------------------------------------------------------------------------- memory

def cmd_rss(pid):
    pid = int(pid)
    children = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                stat = f.read()
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])
            children.setdefault(ppid, []).append(int(d))
        except (OSError, ValueError):
            pass
    total_kib, todo, seen = 0, [pid], set()
    while todo and len(seen) < 10000:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            with open("/proc/%d/status" % p) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total_kib += int(line.split()[1])
        except OSError:
            if p == pid:
                die("process %d is gone" % pid)
        todo.extend(children.get(p, []))
    print("%.1f" % (total_kib / 1024.0))


# --------------------------------------------------------------------------- wrk output

UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0, "h": 3600000.0}


def to_ms(s):
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m|h)", s)
    if not m:
        die("cannot parse wrk latency %r" % s)
    return float(m.group(1)) * UNIT_MS[m.group(2)]


def parse_wrk(text):
    out = {}
    m = re.search(r"Requests/sec:\s+([0-9.]+)", text)
    if not m:
        die("no Requests/sec in wrk output")
    out["rps"] = float(m.group(1))
    m = re.search(r"(\d+) requests in", text)
    out["requests"] = int(m.group(1)) if m else 0
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    out["non2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    out["sockerr"] = sum(int(x) for x in m.groups()) if m else 0
    m = re.search(r"^\s+50%\s+(\S+)", text, re.M)
    if m:
        out["p50_ms"] = to_ms(m.group(1))
    m = re.search(r"^\s+99%\s+(\S+)", text, re.M)
    if m:
        out["p99_ms"] = to_ms(m.group(1))
    m = re.search(r"^BENCH non201=(\d+) responses=(\d+)", text, re.M)
    if m:
        out["non201"] = int(m.group(1))
        out["lua_responses"] = int(m.group(2))
    return out


def cmd_wrk_parse(path):
    with open(path) as f:
        for k, v in parse_wrk(f.read()).items():
            print("%s=%s" % (k, v))


# --------------------------------------------------------------------------- report

METRICS = [
    # key, label, unit, direction, target ratio (None = informational), decimals.
    # Targets, as ours ÷ CHP: at most 0.2 for list latency and memory (fresh and after churn),
    # at least 3 for POST and single-route GET throughput.
    ("post_rps", "new-route `POST /api/routes/<spec>` (8 conns, 2 threads)", "req/s", "ge", 3.0, 0),
    ("list_p50_ms", "`GET /api/routes` median latency, 10,000 routes (1 conn)", "ms", "le", 0.2, 2),
    ("get_rps", "`GET /api/routes/<spec>`, 10,000 routes (8 conns, 2 threads)", "req/s", "ge", 3.0, 0),
    ("rss_mib", "resident memory (VmRSS), 10,000 routes, fresh process", "MiB", "le", 0.2, 1),
    ("rss_churn_mib", "resident memory (VmRSS), 10,000 routes, after the POST run's routes deleted",
     "MiB", "le", 0.2, 1),
]


def read_meta(path):
    meta = {}
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if "=" in line:
                k, v = line.split("=", 1)
                meta[k] = v
    return meta


def fmt(v, d):
    if v is None:
        return "n/a"
    return ("{:,.%df}" % d).format(v)


def read_rows(raw):
    """The rows of a raw figures file (tab-separated, a header line first) as dicts."""
    with open(raw) as f:
        header = f.readline().rstrip("\n").split("\t")
        return [dict(zip(header, line.rstrip("\n").split("\t"))) for line in f if line.strip()]


def cmd_report(raw, meta_path, out):
    meta = read_meta(meta_path)
    rows = read_rows(raw)
    vals = {}  # (server, metric) -> [values in round order]
    for r in rows:
        vals.setdefault((r["server"], r["metric"]), []).append(float(r["value"]))

    L = []
    L.append("# jupyterhub-istio-proxy vs configurable-http-proxy: API benchmark")
    L.append("")
    L.append("- date: %s" % meta.get("date", "?"))
    L.append("- command: `%s`" % meta.get("command", "?"))
    L.append("- machine: `nproc` = %s, %s" % (meta.get("nproc", "?"), meta.get("cpu", "?")))
    L.append("- ours: `%s`, git commit %s" % (meta.get("ours_bin", "?"), meta.get("git", "?")))
    L.append("- CHP: configurable-http-proxy %s on node %s (default log level, as JupyterHub starts it)"
             % (meta.get("chp_version", "?"), meta.get("node_version", "?")))
    L.append("- wrk: %s; %s s per measurement; %s round(s), servers alternating; medians over rounds"
             % (meta.get("wrk_version", "?"), meta.get("duration", "?"), meta.get("rounds", "?")))
    L.append("- every measurement starts the server fresh on 127.0.0.1; only CHP's API port is measured")
    L.append("")
    L.append("> **Noise warning:** this machine has %s cores and is shared/noisy; wrk and the server "
             "under test compete for the same cores, so absolute figures are rough and ratios move "
             "between runs. Compare ratios from the same run only." % meta.get("nproc", "?"))
    L.append("")
    L.append("| metric | unit | ours (median) | CHP (median) | ours ÷ CHP | target | result |")
    L.append("|---|---|---:|---:|---:|---|---|")
    verdicts = []
    for key, label, unit, direction, target, d in METRICS:
        o = vals.get(("ours", key))
        c = vals.get(("chp", key))
        om = statistics.median(o) if o else None
        cm = statistics.median(c) if c else None
        ratio = om / cm if (om is not None and cm) else None
        if target is None:
            tgt, res = "—", "info"
        else:
            tgt = ("≥ %g" if direction == "ge" else "≤ %g") % target
            if ratio is None:
                res = "FAIL (no data)"
            elif (direction == "ge" and ratio >= target) or (direction == "le" and ratio <= target):
                res = "PASS"
            else:
                res = "FAIL"
            verdicts.append(res)
        L.append("| %s | %s | %s | %s | %s | %s | **%s** |" % (
            label, unit, fmt(om, d), fmt(cm, d), fmt(ratio, 3), tgt, res))
    L.append("")
    L.append("## Per round")
    L.append("")
    rounds = sorted({int(r["round"]) for r in rows})
    L.append("| metric | server | " + " | ".join("round %d" % i for i in rounds) + " |")
    L.append("|---|---|" + "---:|" * len(rounds))
    for key, label, unit, _dir, _t, d in METRICS:
        for server in ("ours", "chp"):
            by_round = {int(r["round"]): float(r["value"]) for r in rows
                        if r["server"] == server and r["metric"] == key}
            L.append("| %s (%s) | %s | %s |" % (key, unit, server,
                                                " | ".join(fmt(by_round.get(i), d) for i in rounds)))
    extra = [r for r in rows if r["metric"] in ("post_requests", "post_stored", "churn_deletes", "load_secs", "list_p99_ms")]
    if extra:
        L.append("")
        L.append("Checks: every new-route POST answered 201 (counted by a wrk Lua `response` hook and "
                 "wrk's non-2xx count); the list and single-route runs had no non-2xx answers; "
                 "the 10,000-route store was verified by counting `GET /api/routes`.")
        for key, what in (("post_requests", "POSTs completed by wrk"),
                          ("post_stored", "routes stored after the POST run"),
                          ("churn_deletes", "routes deleted after the POST run (each answered 204)"),
                          ("load_secs", "seconds to load 10,000 routes (4 keep-alive conns, Python)"),
                          ("list_p99_ms", "`GET /api/routes` p99 latency, ms")):
            for server in ("ours", "chp"):
                v = [float(r["value"]) for r in rows if r["server"] == server and r["metric"] == key]
                if v:
                    L.append("- %s, %s: %s" % (what, server, ", ".join(fmt(x, 2 if "ms" in key or "secs" in key else 0) for x in v)))
    notes = meta.get("notes", "").strip()
    if notes:
        L.append("")
        L.append("Notes:")
        for n in notes.split("|"):
            if n.strip():
                L.append("- " + n.strip())
    L.append("")
    overall = "PASS" if verdicts and all(v == "PASS" for v in verdicts) else "FAIL"
    L.append("Overall: **%s** (%d of %d targets met)" % (
        overall, sum(v == "PASS" for v in verdicts), len(verdicts)))
    text = "\n".join(L) + "\n"
    with open(out, "w") as f:
        f.write(text)
    sys.stdout.write(text)
    sys.exit(0 if overall == "PASS" else 3)


# --------------------------------------------------------------------------- kube.sh

def cmd_time_ready(port, secs, log, *cmd):
    """Spawns cmd, polls GET /readyz every ~10 ms, prints ms from spawn to the first 200."""
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        die("time-ready: no command")
    deadline_s = float(secs)

    def stop(_signum, _frame):
        raise SystemExit(130)

    signal.signal(signal.SIGTERM, stop)
    with open(log, "wb") as out:
        t0 = time.monotonic()
        proc = subprocess.Popen(list(cmd), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            last = "no attempt"
            for _ in range(100000):  # bounded in count as well as time
                if time.monotonic() - t0 > deadline_s:
                    die("%s not ready on 127.0.0.1:%s/readyz after %ss (last: %s; log %s)"
                        % (cmd[0], port, secs, last, log))
                if proc.poll() is not None:
                    die("%s exited with %s before it was ready (log %s)" % (cmd[0], proc.returncode, log))
                try:
                    status, _ = get(port, "/readyz", timeout=2.0)
                    if status == 200:
                        print("%.1f" % ((time.monotonic() - t0) * 1000.0))
                        return
                    last = "HTTP %d" % status
                except OSError as e:
                    last = repr(e)
                time.sleep(0.01)
            die("time-ready: gave up polling")
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


KUBE_SELECTOR = "app.kubernetes.io/managed-by=jupyterhub-istio-proxy,jupyterhub-istio-proxy/instance=jupyter"
CONTINUE_RE = re.compile(rb'"continue":"([^"]*)"')


def cmd_kube_list(url, reps):
    """Times a paginated LIST (pages of 500) of hub's VirtualServices, bytes only."""
    u = urllib.parse.urlsplit(url)
    if u.scheme != "http" or u.hostname != HOST:
        die("kube-list wants http://127.0.0.1:PORT, not %r" % url)
    base = "/apis/networking.istio.io/v1/namespaces/hub/virtualservices?limit=500&labelSelector=" \
        + urllib.parse.quote(KUBE_SELECTOR, safe="")
    times = []
    conn = http.client.HTTPConnection(HOST, u.port, timeout=60.0)
    try:
        for _ in range(int(reps)):
            t0 = time.monotonic()
            token, size = None, 0
            for _page in range(10000):  # bounded
                path = base + ("&continue=" + urllib.parse.quote(token, safe="") if token else "")
                conn.request("GET", path, headers={"Accept": "application/json"})
                r = conn.getresponse()
                body = r.read()
                if r.status != 200:
                    die("LIST %s -> HTTP %d" % (path, r.status))
                size += len(body)
                m = CONTINUE_RE.search(body)
                token = m.group(1).decode() if m and m.group(1) else None
                if not token:
                    break
            times.append((time.monotonic() - t0) * 1000.0)
    finally:
        conn.close()
    print("%.1f" % statistics.median(times))


KUBE_METRICS = [
    # key, label, unit, decimals
    ("list_p50_ms", "`GET /api/routes` median latency, 10,000 routes (wrk, 1 conn)", "ms", 2),
    ("ready_ms", "time from start to ready (`/readyz` 200)", "ms", 0),
    ("rss_mib", "resident memory (VmRSS) after the list load", "MiB", 1),
]


def cmd_kube_report(raw, meta_path, out):
    meta = read_meta(meta_path)
    rows = read_rows(raw)
    rounds = sorted({int(r["round"]) for r in rows})

    def per_round(server, metric):
        """{round: median of that round's values}."""
        by = {}
        for r in rows:
            if r["server"] == server and r["metric"] == metric:
                by.setdefault(int(r["round"]), []).append(float(r["value"]))
        return {k: statistics.median(v) for k, v in by.items()}

    def med(server, metric):
        v = list(per_round(server, metric).values())
        return statistics.median(v) if v else None

    ours_list, base_list = med("ours", "list_p50_ms"), med("baseline", "list_p50_ms")
    ratio = base_list / ours_list if (ours_list and base_list is not None) else None
    ready, rss = med("ours", "ready_ms"), med("ours", "rss_mib")
    checks = [
        ("list", ratio is not None and ratio >= 100.0),
        ("ready", ready is not None and ready < 3000.0),
        ("rss", rss is not None and rss < 64.0),
    ]
    verdict = {k: ("PASS" if ok else "FAIL") for k, ok in checks}

    L = []
    routing = meta.get("routing", "istio")
    L.append("# jupyterhub-istio-proxy's Kubernetes store at 10,000 routes, routing: %s" % routing)
    L.append("")
    L.append("- date: %s" % meta.get("date", "?"))
    L.append("- command: `%s`" % meta.get("command", "?"))
    L.append("- machine: `nproc` = %s, %s" % (meta.get("nproc", "?"), meta.get("cpu", "?")))
    L.append("- git commit: %s" % meta.get("git", "?"))
    routes = fmt(float(meta["routes"]), 0) if meta.get("routes", "").isdigit() else "?"
    kinds = "VirtualServices" if routing == "istio" else "VirtualServices and as many HTTPRoutes (ours reads these)"
    L.append("- API server: testkit's fake (`fake-kube-server`, plain HTTP on 127.0.0.1) holding %s "
             "%s in namespace `hub`" % (routes, kinds))
    L.append("- baseline: `list-per-request` (the Go proxy's design: a paginated LIST, limit 500, "
             "per `GET /api/routes`) against the same API server")
    L.append("- wrk: %s; %s s per measurement; %s round(s); %s timed starts per round; "
             "medians over rounds (time to ready: median of each round's starts, then over rounds)"
             % (meta.get("wrk_version", "?"), meta.get("duration", "?"), meta.get("rounds", "?"),
                meta.get("ready_tries", "?")))
    L.append("")
    L.append("> **Noise warning:** %s cores shared by wrk, the fake API server and the server under "
             "test; absolute figures are rough. Read the ratio from one run." % meta.get("nproc", "?"))
    L.append("")
    L.append("| metric | ours (median) | list-per-request (median) | list-per-request ÷ ours | target | result |")
    L.append("|---|---:|---:|---:|---|---|")
    L.append("| `GET /api/routes` median latency, 10,000 routes | %s ms | %s ms | %s | ≥ 100 | **%s** |"
             % (fmt(ours_list, 2), fmt(base_list, 2), fmt(ratio, 1), verdict["list"]))
    L.append("| time from start to ready | %s ms | — | — | < 3,000 ms | **%s** |"
             % (fmt(ready, 0), verdict["ready"]))
    L.append("| resident memory (VmRSS), 10,000 routes | %s MiB | %s MiB | — | < 64 MiB | **%s** |"
             % (fmt(rss, 1), fmt(med("baseline", "rss_mib"), 1), verdict["rss"]))
    L.append("")
    L.append("## Per round")
    L.append("")
    L.append("| metric | server | " + " | ".join("round %d" % i for i in rounds) + " |")
    L.append("|---|---|" + "---:|" * len(rounds))
    lines = [
        ("list_p50_ms", "ms", 2, ("ours", "baseline")),
        ("list_p99_ms", "ms", 2, ("ours", "baseline")),
        ("list_requests", "count", 0, ("ours", "baseline")),
        ("ready_ms", "ms, median of the round's starts", 0, ("ours",)),
        ("rss_mib", "MiB", 1, ("ours", "baseline")),
        ("fetch_ms", "ms, median of 5", 1, ("fake",)),
    ]
    for key, unit, d, servers in lines:
        for server in servers:
            by = per_round(server, key)
            if by:
                L.append("| %s (%s) | %s | %s |" % (key, unit, server,
                                                    " | ".join(fmt(by.get(i), d) for i in rounds)))
    ours_by, base_by = per_round("ours", "list_p50_ms"), per_round("baseline", "list_p50_ms")
    L.append("| list-per-request ÷ ours (median latencies) | — | %s |" % " | ".join(
        fmt(base_by[i] / ours_by[i], 1) if ours_by.get(i) and i in base_by else "n/a" for i in rounds))
    starts = [r for r in rows if r["metric"] == "ready_ms"]
    if starts:
        L.append("")
        L.append("Every timed start (ms): " + "; ".join(
            "round %d: %s" % (i, ", ".join(fmt(float(r["value"]), 0) for r in starts if int(r["round"]) == i))
            for i in rounds))
    L.append("")
    L.append("`fetch_ms` (fake): the same paginated LIST the baseline makes, fetched by Python without "
             "decoding: about the API server's share of the baseline's latency.")
    L.append("Checks: both servers listed exactly %s routes before their load; no non-2xx answers "
             "or socket errors under wrk." % routes)
    notes = meta.get("notes", "").strip()
    if notes:
        L.append("")
        L.append("Notes:")
        for n in notes.split("|"):
            if n.strip():
                L.append("- " + n.strip())
    L.append("")
    passed = sum(ok for _, ok in checks)
    overall = "PASS" if passed == len(checks) else "FAIL"
    L.append("Overall: **%s** (%d of %d targets met)" % (overall, passed, len(checks)))
    text = "\n".join(L) + "\n"
    with open(out, "w") as f:
        f.write(text)
    sys.stdout.write(text)
    sys.exit(0 if overall == "PASS" else 3)


def main(argv):
    if not argv:
        die(__doc__)
    cmd, args = argv[0], argv[1:]
    table = {
        "freeports": cmd_freeports, "wait-ready": cmd_wait_ready, "ping": cmd_ping,
        "load": cmd_load, "count": cmd_count, "delete-all": cmd_delete_all, "has": cmd_has, "rss": cmd_rss,
        "wrk-parse": cmd_wrk_parse, "report": cmd_report,
        "time-ready": cmd_time_ready, "kube-list": cmd_kube_list, "kube-report": cmd_kube_report,
    }
    if cmd not in table:
        die("unknown subcommand %r\n%s" % (cmd, __doc__))
    table[cmd](*args)


if __name__ == "__main__":
    main(sys.argv[1:])
