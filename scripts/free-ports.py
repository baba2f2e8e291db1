#!/usr/bin/python3
# Prints the first of COUNT consecutive TCP ports that are free on 127.0.0.1 right now, from a
# random base, for the engine scripts (pg-up.sh, swift-up.sh) whose servers take fixed ports.
# The base lies below the kernel's ephemeral range: a port free now is not then handed out to
# another process's connection or port-0 listener before the engine binds it.
#
#   scripts/free-ports.py COUNT
import random
import socket
import sys

count = int(sys.argv[1]) if len(sys.argv) == 2 else 0
if not 1 <= count <= 100:
    sys.exit("usage: free-ports.py COUNT (1 to 100)")
try:
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        ephemeral_low = int(f.read().split()[0])
except (OSError, ValueError, IndexError):
    ephemeral_low = 32768
top = max(ephemeral_low - count, 10001)
for _ in range(200):
    base = random.randrange(10000, top)
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
