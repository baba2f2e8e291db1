#!/usr/bin/env python3
"""Test double of the problem statement's original TCP server.

One operation per connection, every field padded with spaces to 1024 bytes:
  upload:   "upload", the name, the size in decimal, then the bytes (no reply)
  download: "download", the name; the answer is the size in decimal padded to 1024 bytes and the
            bytes, or the text "File not found"
Like the original it reads each field and the body with a single recv() call, so a large body can
arrive cut, and it serves one connection at a time. Files are kept directly in the --data folder.

Unlike the original, a stored name must be a plain file name (letters, digits, '.', '_', '-'), so
no request can reach outside the data folder, and sizes are bounded. --cut-every N keeps only the
first half of every Nth upload, to show what a cut body does to a client.

Prints "listening on HOST:PORT" once ready (--port 0 picks a free port).
"""
import argparse
import os
import re
import socketserver
import sys

FIELD = 1024
MAX_SIZE = 16 << 20
NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,254}\Z")


def valid_name(name):
    return bool(NAME.match(name)) and name not in (".", "..")


class Handler(socketserver.BaseRequestHandler):
    data_dir = "."
    cut_every = 0
    uploads = 0

    def field(self):
        return self.request.recv(FIELD).decode("latin-1").strip()

    def handle(self):
        self.request.settimeout(30)
        try:
            command = self.field()
            if command == "upload":
                self.upload()
            elif command == "download":
                self.download()
        except (OSError, ValueError):
            pass

    def upload(self):
        name = self.field()
        size = int(self.field())
        if not valid_name(name) or size < 0 or size > MAX_SIZE:
            return
        data = self.request.recv(size) if size else b""
        Handler.uploads += 1
        if self.cut_every and Handler.uploads % self.cut_every == 0:
            data = data[: len(data) // 2]
        with open(os.path.join(self.data_dir, name), "wb") as out:
            out.write(data)

    def download(self):
        name = self.field()
        path = os.path.join(self.data_dir, name)
        if not valid_name(name) or not os.path.isfile(path):
            self.request.sendall(b"File not found")
            return
        with open(path, "rb") as source:
            data = source.read()
        self.request.sendall(str(len(data)).encode().ljust(FIELD))
        self.request.sendall(data)


class Server(socketserver.TCPServer):
    allow_reuse_address = True


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=65432)
    parser.add_argument("--data", required=True, help="folder holding the stored files")
    parser.add_argument("--cut-every", type=int, default=0, help="cut every Nth upload in half")
    args = parser.parse_args()
    os.makedirs(args.data, exist_ok=True)
    Handler.data_dir = args.data
    Handler.cut_every = args.cut_every
    with Server((args.bind, args.port), Handler) as server:
        host, port = server.server_address[:2]
        print(f"listening on {host}:{port}", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
