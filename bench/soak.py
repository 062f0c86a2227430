"""The load of bench/soak.sh, then its check of the updates: WORKERS threads, each with
one keep-alive connection to the load balancer, for DURATION seconds, each request one of
  item      GET /conversations/{id}
  list      GET /conversations?... (filters, page sizes, pages)
  revalid   GET /conversations/{id} with If-None-Match: the tag last seen for it
  update    PATCH /conversations/{id} {"joinedPersonId": <a value never sent before>},
            half of them with If-Match: the tag last seen (412 when it is outdated)
  junk      a conversation read with a random bearer or X-API-Key (401, no Qpien call)
Every update of a conversation comes from the one worker that owns it, one at a time, so
its last 200 is its last acknowledged value. After the load, each conversation that got
a 200 is read once through the load balancer: it must show that value, or one sent later
whose answer was ambiguous (502, 504 or a broken connection: it may have reached Qpien).

usage: python3 soak.py URL KEY DURATION WORKERS THINK_MS OUT.json
Standard library only. Prints nothing but errors; OUT.json holds the figures.
"""

import http.client
import json
import random
import sys
import threading
import time
import urllib.parse
from collections import Counter

SEEDED = 72  # sandbox/src/data.rs numbers its conversations 1..72 in hex
IDS = ["6650a1%018x" % n for n in range(1, SEEDED + 1)]
LISTS = [
    f"/conversations?{f}pageSize={size}&page={page}"
    for f in ("", "status=open&", "status=pending&", "starred=true&")
    for size in (5, 20)
    for page in (1, 2, 3)
]
# (action, weight)
MIX = [("item", 44), ("list", 20), ("revalid", 20), ("update", 6), ("junk", 10)]
# The 5xx problems the service documents (docs/http.md, "Errors").
DOCUMENTED_5XX = {
    502: {"/problems/upstream-error"},
    503: {"/problems/unavailable", "/problems/not-ready"},
    504: {"/problems/upstream-timeout"},
}
# Answers after which an update may or may not have reached Qpien.
AMBIGUOUS = {502, 504, "socket"}


class Worker(threading.Thread):
    def __init__(self, index, count, base, key, deadline, think):
        super().__init__(daemon=True)
        self.host, self.port = base.hostname, base.port
        self.key, self.deadline, self.think = key, deadline, think
        self.owned = IDS[index::count]
        self.rng = random.Random(index)
        self.serial = index * 10**9
        self.connection = None
        self.statuses = Counter()  # "action status" -> count
        self.undocumented = []  # samples of 5xx answers that are no documented problem
        self.tags = {}  # id -> last ETag seen
        self.updates = {i: [] for i in self.owned}  # id -> [(value, outcome)]

    def request(self, method, path, headers, body=None):
        """(status or "socket", headers, body bytes)."""
        for _ in range(2):
            try:
                if self.connection is None:
                    self.connection = http.client.HTTPConnection(self.host, self.port, timeout=30)
                self.connection.request(method, path, body=body, headers=headers)
                response = self.connection.getresponse()
                data = response.read()
                if response.getheader("connection", "").lower() == "close":
                    self.connection.close()
                    self.connection = None
                return response.status, response, data
            except (OSError, http.client.HTTPException):
                if self.connection is not None:
                    self.connection.close()
                self.connection = None
                # An idle keep-alive connection the balancer closed: once more, fresh.
        return "socket", None, b""

    def record(self, action, status, response, data):
        self.statuses[f"{action} {status}"] += 1
        if isinstance(status, int) and status >= 500:
            kind = None
            if response is not None and response.getheader("content-type", "").startswith(
                "application/problem+json"
            ):
                try:
                    kind = json.loads(data).get("type")
                except ValueError:
                    pass
            if kind not in DOCUMENTED_5XX.get(status, set()) and len(self.undocumented) < 20:
                sample = data[:160].decode("utf-8", "replace")
                self.undocumented.append(f"{action} {status} {kind} {sample}")

    def run(self):
        actions = [a for a, _ in MIX]
        weights = [w for _, w in MIX]
        auth = {"X-API-Key": self.key}
        while time.monotonic() < self.deadline:
            action = self.rng.choices(actions, weights)[0]
            cid = self.rng.choice(IDS)
            path = f"/conversations/{cid}"
            tagged = action != "list"
            if action == "item":
                status, response, data = self.request("GET", path, auth)
            elif action == "list":
                status, response, data = self.request("GET", self.rng.choice(LISTS), auth)
            elif action == "revalid":
                headers = dict(auth)
                if cid in self.tags:
                    headers["If-None-Match"] = self.tags[cid]
                status, response, data = self.request("GET", path, headers)
            elif action == "junk":
                token = "%032x" % self.rng.getrandbits(128)
                headers = (
                    {"Authorization": f"Bearer {token}"}
                    if self.rng.random() < 0.5
                    else {"X-API-Key": token}
                )
                status, response, data = self.request("GET", path, headers)
            else:
                cid = self.rng.choice(self.owned)
                path = f"/conversations/{cid}"
                self.serial += 1
                value = "6650a3%018x" % self.serial
                headers = dict(auth, **{"Content-Type": "application/merge-patch+json"})
                if cid in self.tags and self.rng.random() < 0.5:
                    headers["If-Match"] = self.tags[cid]
                body = json.dumps({"joinedPersonId": value})
                status, response, data = self.request("PATCH", path, headers, body)
                self.updates[cid].append((value, status))
            # 412 carries the current tag too.
            if tagged and status in (200, 304, 412) and response is not None:
                tag = response.getheader("etag")
                if tag:
                    self.tags[cid] = tag
            self.record(action, status, response, data)
            if self.think:
                time.sleep(self.think)


def verify(workers, base, key):
    """Each conversation with an acknowledged update, read once: what it shows."""
    connection = http.client.HTTPConnection(base.hostname, base.port, timeout=30)
    outcome = Counter()
    lost = []
    for worker in workers:
        for cid, attempts in worker.updates.items():
            acked = [i for i, (_, status) in enumerate(attempts) if status == 200]
            if not acked:
                continue
            last = acked[-1]
            later = {v for v, status in attempts[last + 1 :] if status in AMBIGUOUS}
            connection.request("GET", f"/conversations/{cid}", headers={"X-API-Key": key})
            response = connection.getresponse()
            shown = json.loads(response.read()).get("joinedPersonId")
            if response.status == 200 and shown == attempts[last][0]:
                outcome["last 200 shown"] += 1
            elif response.status == 200 and shown in later:
                outcome["a later ambiguous update shown"] += 1
            else:
                outcome["lost"] += 1
                lost.append(f"{cid}: {response.status} shows {shown}, last 200 was {attempts[last][0]}")
    return outcome, lost


def main():
    url, key, duration, count, think_ms, out = sys.argv[1:7]
    base = urllib.parse.urlsplit(url)
    deadline = time.monotonic() + int(duration)
    workers = [
        Worker(i, int(count), base, key, deadline, int(think_ms) / 1000) for i in range(int(count))
    ]
    started = time.monotonic()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.monotonic() - started
    statuses = sum((w.statuses for w in workers), Counter())
    verified, lost = verify(workers, base, key)
    attempted = sum(len(a) for w in workers for a in w.updates.values())
    acknowledged = sum(s == 200 for w in workers for a in w.updates.values() for _, s in a)
    summary = {
        "seconds": round(elapsed, 1),
        "requests": sum(statuses.values()),
        "statuses": dict(sorted(statuses.items())),
        "undocumented_5xx": [s for w in workers for s in w.undocumented],
        "updates_sent": attempted,
        "updates_acknowledged": acknowledged,
        "verified": dict(verified),
        "lost": lost,
    }
    with open(out, "w") as f:
        json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()
