#!/usr/bin/env python3
"""Measures transition -> first delivery attempt of notifications on a running qod server.

Usage: scripts/notification-latency.py URL [COUNT] [DURATION_SECS]
The server must run with --allow-insecure-sinks --allow-private-sinks: this script's sink
listens on loopback over http. Each session produces two events (AVAILABLE, then UNAVAILABLE
at expiry); latency is the arrival time minus the event's `time`. Standard library only.
"""
import json
import os
import sys
import threading
import time
import urllib.request

# The server's access token (its development token is the last line it prints), if it wants one.
HEADERS = {"content-type": "application/json"}
if os.environ.get("QOD_TOKEN"):
    HEADERS["authorization"] = "Bearer " + os.environ["QOD_TOKEN"]
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

arrivals = {}
lock = threading.Lock()


class Sink(BaseHTTPRequestHandler):
    def do_POST(self):
        now = time.time()
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        with lock:
            arrivals.setdefault(body["id"], (now, body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def main():
    url = sys.argv[1]
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    duration = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    server = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sink = f"http://127.0.0.1:{server.server_address[1]}/events"
    seed = int(time.time()) % 1_000_000
    for n in range(count):
        body = json.dumps({
            "device": {"phoneNumber": f"+3368{seed * 1000 + n:07d}"[:13]},
            "applicationServer": {"ipv4Address": f"198.51.{n // 250}.{n % 250 + 1}"},
            "qosProfile": "QOS_E", "duration": duration, "sink": sink,
        }).encode()
        req = urllib.request.Request(f"{url}/quality-on-demand/v1/sessions", body, HEADERS)
        urllib.request.urlopen(req).read()
        if n % 50 == 0:
            print(f"created {n + 1}/{count}", file=sys.stderr)
    deadline = time.time() + duration + 10
    while time.time() < deadline and len(arrivals) < 2 * count:
        time.sleep(0.1)
    latencies = {"AVAILABLE": [], "UNAVAILABLE": []}
    for at, event in arrivals.values():
        when = datetime.fromisoformat(event["time"].replace("Z", "+00:00")).timestamp()
        latencies[event["data"]["qosStatus"]].append((at - when) * 1000)
    print(f"events received: {len(arrivals)}/{2 * count}")
    for status, xs in latencies.items():
        if xs:
            print(f"{status}: transition -> first attempt p50 {pct(xs, 50):.1f} ms  p99 {pct(xs, 99):.1f} ms  max {max(xs):.1f} ms")


if __name__ == "__main__":
    main()
