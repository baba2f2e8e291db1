#!/usr/bin/env python3
"""Test double of the problem statement's original "HTTPS" server (in practice plain HTTP).

Speaks what the original speaks: POST /upload with a multipart form field "file" stores the body
under the part's filename; GET /download/<name> returns those bytes, or 404 if there are none. No
listing, no delete, no authentication. Files are kept directly in the --data folder.

Unlike the original, a stored name must be a plain file name (letters, digits, '.', '_', '-'),
so no request can reach outside the data folder, and request bodies are bounded.

Prints "listening on HOST:PORT" once ready (--port 0 picks a free port).
"""
import argparse
import http.server
import os
import re
import sys

MAX_BODY = 16 << 20
NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,254}\Z")


def valid_name(name):
    return bool(NAME.match(name)) and name not in (".", "..")


def multipart_file(content_type, body):
    """(filename, bytes) of the form field "file", or None."""
    match = re.search(r'boundary="?([^";]+)"?', content_type or "")
    if not content_type or not content_type.startswith("multipart/form-data") or not match:
        return None
    delimiter = b"--" + match.group(1).encode("latin-1")
    for part in body.split(delimiter)[1:]:
        if part.startswith(b"--"):
            break
        head, sep, data = part.partition(b"\r\n\r\n")
        if not sep or not data.endswith(b"\r\n"):
            continue
        data = data[:-2]
        disposition = ""
        for line in head.decode("latin-1").split("\r\n"):
            key, _, value = line.partition(":")
            if key.strip().lower() == "content-disposition":
                disposition = value
        if not re.search(r'(^|;)\s*name="file"', disposition):
            continue
        filename = re.search(r'filename="([^"]*)"', disposition)
        return (filename.group(1) if filename else "", data)
    return None


class Handler(http.server.BaseHTTPRequestHandler):
    data_dir = "."

    def reply(self, status, body=b"", content_type="text/plain"):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        if self.path != "/upload":
            return self.reply(404, b"Not Found")
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            return self.reply(411, b"Length Required")
        if length < 0 or length > MAX_BODY:
            return self.reply(413, b"Payload Too Large")
        body = self.rfile.read(length)
        found = multipart_file(self.headers.get("Content-Type"), body)
        if found is None:
            return self.reply(400, b"No file part")
        name, data = found
        if not valid_name(name):
            return self.reply(400, b"Invalid file name")
        with open(os.path.join(self.data_dir, name), "wb") as out:
            out.write(data)
        self.reply(200, b"File uploaded successfully")

    def do_GET(self):
        if not self.path.startswith("/download/"):
            return self.reply(404, b"Not Found")
        name = self.path[len("/download/"):]
        path = os.path.join(self.data_dir, name)
        if not valid_name(name) or not os.path.isfile(path):
            return self.reply(404, b"File not found")
        with open(path, "rb") as source:
            data = source.read()
        self.reply(200, data, "application/octet-stream")

    def log_message(self, format, *args):
        pass


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # A client that gave up and closed its connection is not worth a traceback.
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--data", required=True, help="folder holding the stored files")
    args = parser.parse_args()
    os.makedirs(args.data, exist_ok=True)
    Handler.data_dir = args.data
    server = Server((args.bind, args.port), Handler)
    host, port = server.server_address[:2]
    print(f"listening on {host}:{port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
