#!/usr/bin/python3
# Prints the first of COUNT consecutive TCP ports that are free on 127.0.0.1 right now, from a
# random base, for the engine scripts (pg-up.sh, swift-up.sh) whose servers take fixed ports.
#
#   scripts/free-ports.py COUNT
import random
import socket
import sys

count = int(sys.argv[1]) if len(sys.argv) == 2 else 0
if not 1 <= count <= 100:
    sys.exit("usage: free-ports.py COUNT (1 to 100)")
for _ in range(200):
    base = random.randrange(20000, 60000)
    held = []
    try:
        for port in range(base, base + count):
            s = socket.socket()
            held.append(s)
            s.bind(("127.0.0.1", port))
        print(base)
        sys.exit(0)
    except OSError:
        pass
    finally:
        for s in held:
            s.close()
sys.exit("free-ports.py: no free ports found")
