#!/usr/bin/env python3
"""A real HTTP server for the tests: `GET/POST /status/N` answers N with a small body; any POST
body is also saved as DIR/<n>.json (webhook deliveries), with its headers in DIR/<n>.headers.
Prints "ready <port>" once listening.

usage: http_server.py --port P --dir DIR
"""
import argparse
import itertools
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--dir", required=True)
    a = ap.parse_args()
    counter = itertools.count(1)

    class Handler(BaseHTTPRequestHandler):
        def answer(self):
            parts = self.path.strip("/").split("/")
            status = int(parts[1]) if len(parts) > 1 and parts[0] == "status" else 200
            body = f"status {status} for {self.command} {self.path}\n".encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            self.answer()

        def do_POST(self):
            n = next(counter)
            length = int(self.headers.get("Content-Length", "0"))
            data = self.rfile.read(length)
            with open(os.path.join(a.dir, f"{n}.headers"), "w") as f:
                f.write(str(self.headers))
            tmp = os.path.join(a.dir, f".{n}.tmp")
            with open(tmp, "wb") as f:
                f.write(data)
            os.rename(tmp, os.path.join(a.dir, f"{n}.json"))
            self.answer()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    print(f"ready {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
