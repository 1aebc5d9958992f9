#!/usr/bin/env python3
"""A generic Usher channel adapter: the small service that sits between a channel's provider
and Usher. Python's standard library only, so that it reads as the contract itself
(docs/adapters.md) and runs anywhere.

    provider --POST /inbound--> adapter --POST /v1/channels/{id}/inbound--> Usher
    Usher --signed webhook POST /outbound--> adapter --POST PROVIDER_SEND_URL--> provider

Inbound, the provider (or whatever receives its webhooks) posts
    {"from": "<contact id on the channel>", "name": "...", "message_id": "...", "text": "..."}
and the adapter hands it to Usher, retrying with the same message id (Usher stores it once).

Outbound, Usher posts each `message.sent` of the channel's conversations, signed. The adapter
checks the signature and its age, drops a delivery it has already handed on (Usher delivers at
least once), and posts {"to", "text", "reference"} to the provider. Any answer other than 2xx
makes Usher try again later, with backoff.

Settings (environment):
    USHER_URL             e.g. http://127.0.0.1:8080
    USHER_TOKEN           an integration token
    USHER_CHANNEL         the channel's id
    USHER_CHANNEL_SECRET  the channel's secret (shown once when the channel was made)
    PROVIDER_SEND_URL     where outbound messages go
    LISTEN                host:port to listen on (default 127.0.0.1:9000)
"""

import hashlib
import hmac
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

USHER_URL = os.environ["USHER_URL"].rstrip("/")
USHER_TOKEN = os.environ["USHER_TOKEN"]
CHANNEL = os.environ["USHER_CHANNEL"]
SECRET = os.environ["USHER_CHANNEL_SECRET"].encode()
PROVIDER_SEND_URL = os.environ["PROVIDER_SEND_URL"]
HOST, PORT = os.environ.get("LISTEN", "127.0.0.1:9000").rsplit(":", 1)
# Signatures older or newer than this are refused (replays).
TOLERANCE_SECONDS = 300

handed_on = set()  # delivery ids already given to the provider
handed_on_lock = threading.Lock()


def post_json(url, body, headers=None, timeout=10):
    data = json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="POST")
    req.add_header("content-type", "application/json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def verify(header, body):
    """The documented scheme: Usher-Signature is t=UNIX,v1=HEX with HEX the HMAC-SHA256 of
    "UNIX.BODY" under the channel's secret."""
    try:
        parts = dict(p.split("=", 1) for p in header.split(","))
        t, v1 = parts["t"], parts["v1"]
        if abs(time.time() - int(t)) > TOLERANCE_SECONDS:
            return False
    except (KeyError, ValueError):
        return False
    expected = hmac.new(SECRET, t.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, v1)


class Handler(BaseHTTPRequestHandler):
    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/healthz":
            self.reply(200, {"status": "ok"})
        else:
            self.reply(404, {"error": "not found"})

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        if self.path == "/inbound":
            self.inbound(body)
        elif self.path == "/outbound":
            self.outbound(body)
        else:
            self.reply(404, {"error": "not found"})

    def inbound(self, body):
        try:
            m = json.loads(body)
            call = {
                "contact": {"external_id": m["from"], **({"name": m["name"]} if m.get("name") else {})},
                "message": {"id": m["message_id"], "text": m["text"]},
            }
        except (ValueError, KeyError, TypeError):
            return self.reply(400, {"error": "expected from, message_id and text"})
        url = f"{USHER_URL}/v1/channels/{CHANNEL}/inbound"
        for attempt in range(4):
            try:
                status, answer = post_json(url, call, {"authorization": f"Bearer {USHER_TOKEN}"})
            except OSError:
                status, answer = None, None
            if status is not None and status < 500:
                break
            time.sleep(0.5 * 2 ** attempt)  # the same message id: a retry is stored once
        if status in (200, 201):
            c = answer["conversation"]
            return self.reply(200, {"conversation": c["id"], "status": c["status"],
                                    "outcome": answer["outcome"], "replayed": answer["replayed"]})
        return self.reply(502, {"error": "usher refused or is unreachable", "usher": answer})

    def outbound(self, body):
        if not verify(self.headers.get("usher-signature", ""), body):
            return self.reply(401, {"error": "bad signature"})
        delivery = self.headers.get("usher-delivery", "")
        with handed_on_lock:
            if delivery in handed_on:
                return self.reply(200, {"duplicate": True})
        d = json.loads(body)
        if d["event"]["kind"] != "message.sent" or "message" not in d:
            return self.reply(200, {"ignored": d["event"]["kind"]})
        send = {"to": d["contact"]["external_id"], "text": d["message"]["text"], "reference": d["message"]["id"]}
        try:
            status, _ = post_json(PROVIDER_SEND_URL, send)
        except OSError:
            status = None
        if status is None or status >= 300:
            return self.reply(502, {"error": "the provider did not take it"})  # Usher retries
        with handed_on_lock:
            handed_on.add(delivery)
        return self.reply(200, {"sent": True})

    def log_message(self, fmt, *args):
        sys.stderr.write("adapter: " + (fmt % args) + "\n")


if __name__ == "__main__":
    server = ThreadingHTTPServer((HOST, int(PORT)), Handler)
    sys.stderr.write(f"adapter listening on {HOST}:{PORT} for channel {CHANNEL}\n")
    server.serve_forever()
