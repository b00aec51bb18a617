#!/usr/bin/env python3
"""Measures create -> AVAILABLE and expiresAt -> UNAVAILABLE on a running qod server.

Usage: scripts/lifecycle-latency.py URL DB_FILE [COUNT] [DURATION_SECS]
Creates COUNT sessions one after another (each its own device), waits for them to expire, then
reads the recorded transition times from the server's SQLite file. Standard library only.
"""
import json
import os
import sqlite3
import statistics
import sys
import time
import urllib.request

# The server's access token (its development token is the last line it prints), if it wants one.
HEADERS = {"content-type": "application/json"}
if os.environ.get("QOD_TOKEN"):
    HEADERS["authorization"] = "Bearer " + os.environ["QOD_TOKEN"]


def create(url, i, duration):
    body = json.dumps({
        "device": {"phoneNumber": f"+3369{i:07d}"},
        "applicationServer": {"ipv4Address": "198.51.100.10"},
        "qosProfile": "QOS_E",
        "duration": duration,
    }).encode()
    req = urllib.request.Request(f"{url}/quality-on-demand/v1/sessions", body, HEADERS)
    with urllib.request.urlopen(req) as r:
        return json.load(r)["sessionId"]


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def main():
    url, db = sys.argv[1], sys.argv[2]
    count = int(sys.argv[3]) if len(sys.argv) > 3 else 200
    duration = int(sys.argv[4]) if len(sys.argv) > 4 else 2
    seed = int(time.time()) % 1_000_000
    ids = []
    for n in range(count):
        ids.append((create(url, seed * 1000 + n, duration)))
        if n % 50 == 0:
            print(f"created {n + 1}/{count}", file=sys.stderr)
    print(f"waiting {duration + 2} s for expiries", file=sys.stderr)
    time.sleep(duration + 2)
    con = sqlite3.connect(db)
    to_available, lateness = [], []
    for sid in ids:
        rows = dict(con.execute(
            "SELECT to_status, at_ms FROM session_events WHERE session_id = ? AND to_status IN ('REQUESTED','AVAILABLE','UNAVAILABLE')",
            (sid,)).fetchall())
        if {"REQUESTED", "AVAILABLE", "UNAVAILABLE"} <= rows.keys():
            to_available.append(rows["AVAILABLE"] - rows["REQUESTED"])
            lateness.append(rows["UNAVAILABLE"] - (rows["AVAILABLE"] + duration * 1000))
    print(f"sessions measured: {len(to_available)}/{count}")
    for name, xs in (("create -> AVAILABLE (ms)", to_available), ("expiresAt -> UNAVAILABLE (ms)", lateness)):
        print(f"{name}: p50 {pct(xs, 50)}  p99 {pct(xs, 99)}  max {max(xs)}  mean {statistics.mean(xs):.1f}")


if __name__ == "__main__":
    main()
