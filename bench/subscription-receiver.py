"""The receiver of bench/subscriptions.sh: answers every POST 204 at once and records,
for each delivery, the subscription (the last path segment), the webhook-id, the event's
occurredAt and the arrival time, one tab-separated line each, to OUT (appended, so a
restart after the outage goes on in the same file). Listens on RECEIVER_PORT."""

import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

OUT = open(os.environ["OUT"], "a", buffering=1)
LOCK = threading.Lock()


class Receive(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the facade reuses its connections

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        arrived = time.time()
        occurred = json.loads(body)["occurredAt"]
        line = f"{self.path.rsplit('/', 1)[-1]}\t{self.headers['webhook-id']}\t{occurred}\t{arrived:.6f}\n"
        with LOCK:
            OUT.write(line)
        self.send_response(204)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


ThreadingHTTPServer.daemon_threads = True
# The facade opens a connection per subscription at once: the default backlog of 5 drops
# most of their SYNs, and the kernel retries them only after 1, 3, 7... seconds.
ThreadingHTTPServer.request_queue_size = 1024
ThreadingHTTPServer(("127.0.0.1", int(os.environ["RECEIVER_PORT"])), Receive).serve_forever()
