"""A webhook receiver that trusts only what the Standard Webhooks reference library
(the `standardwebhooks` package, not the facade's code) verifies.

usage: webhook-receiver.py PORT SECRET_FILE OUT_FILE

Each POST is verified with the secret in SECRET_FILE (read again for every delivery, so
a rotation can be followed) and answered 204; one JSON line per delivery goes to
OUT_FILE: {"id", "verified", "type", "signatures"}. A delivery that does not verify is
answered 401.
"""

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

PORT, SECRET_FILE, OUT_FILE = int(sys.argv[1]), sys.argv[2], sys.argv[3]


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        with open(SECRET_FILE) as f:
            secret = f.read().strip()
        headers = {name.lower(): value for name, value in self.headers.items()}
        try:
            event = Webhook(secret).verify(body, headers)
            verified = True
        except WebhookVerificationError:
            event, verified = {}, False
        with open(OUT_FILE, "a") as out:
            out.write(json.dumps({
                "id": headers.get("webhook-id"),
                "verified": verified,
                "type": event.get("type"),
                "signatures": len(headers.get("webhook-signature", "").split(" ")),
            }) + "\n")
        self.send_response(204 if verified else 401)
        self.end_headers()

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", PORT), Receiver).serve_forever()
