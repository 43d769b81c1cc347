#!/usr/bin/python3
"""What N MQTT QoS 1 sessions cost Debian's nats-server (docs/device-bus.md).

Starts nats-server with a config shaped like the one spoke/bus generates (one
tenant account with JetStream, MQTT on loopback), then N devices, each with a
persistent session (clean session 0) subscribed at QoS 1 to its own desired
topic t/acme/d/dev-<i>/desired: one JetStream consumer each. Prints one JSON
line per figure: connect+subscribe time per session, the server's RSS, the
consumers it holds, a retained desired write to every device and the time
until all have it, and a SIGKILL + restart with N durable consumers to recover.

A measurement for the design doc, not a benchmark with a target: the
device.twin benchmark (bench/) is the one that gates. Raw MQTT 3.1.1 over
sockets, one process, so that the client is not what is measured.

  ulimit -n 20000; spoke/bus/tools/qos1_sessions.py 10000 [--memory-consumers] [--qos0]

--qos0 subscribes at QoS 0 instead (no consumer: the retained message is what
a device that was away gets), for comparison.
"""
import json
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request

HASH = "$2b$04$1DxN60pCl7OwMDfLABCevuzMDZbxAtgtKDZ0LGG3wJWTK/pCmUg0O"  # of "pw"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def rlen(n):
    out = b""
    while True:
        b = n % 128
        n //= 128
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            return out


def mstr(s):
    b = s.encode()
    return struct.pack("!H", len(b)) + b


def packet(kind, body):
    return bytes([kind]) + rlen(len(body)) + body


def read_packet(sock):
    head = recv_exact(sock, 1)
    mult, n = 1, 0
    while True:
        b = recv_exact(sock, 1)[0]
        n += (b & 0x7F) * mult
        mult *= 128
        if not b & 0x80:
            break
    return head[0], recv_exact(sock, n)


def recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf


def connect(port, cid, clean):
    s = socket.create_connection(("127.0.0.1", port))
    flags = 0x80 | 0x40 | (0x02 if clean else 0)
    body = mstr("MQTT") + bytes([4, flags]) + struct.pack("!H", 600)
    body += mstr(cid) + mstr("gw@acme") + mstr("pw")
    s.sendall(packet(0x10, body))
    kind, b = read_packet(s)
    assert kind == 0x20 and b[1] == 0, (kind, b)
    return s


def subscribe(s, topic, qos):
    s.sendall(packet(0x82, struct.pack("!H", 1) + mstr(topic) + bytes([qos])))
    kind, b = read_packet(s)
    assert kind == 0x90 and b[2] == qos, (kind, b)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


QOS = 1


def emit(metric, value, unit, n):
    print(json.dumps({"measure": "bus.qos1_sessions", "sessions": n, "qos": QOS, "metric": metric,
                      "value": round(value, 3), "unit": unit}), flush=True)


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))]


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    memory = "--memory-consumers" in sys.argv
    qos = 0 if "--qos0" in sys.argv else 1
    global QOS
    QOS = qos
    binary = shutil.which("nats-server") or "/usr/sbin/nats-server"
    d = tempfile.mkdtemp(prefix="canopy-qos1-")
    mqtt, client, mon = free_port(), free_port(), free_port()
    conf = os.path.join(d, "nats.conf")
    with open(conf, "w") as f:
        f.write(f"""server_name: "site-bench"
listen: "127.0.0.1:{client}"
http: "127.0.0.1:{mon}"
max_connections: 200000
jetstream {{ store_dir: "{d}/js", domain: "site-bench", max_memory_store: 1073741824, max_file_store: 8589934592 }}
accounts {{
  "tenant-acme": {{
    jetstream: {{max_memory: 1073741824, max_file: 4294967296, max_consumers: {n + 100}}}
    users: [{{user: "gw@acme", password: "{HASH}", allowed_connection_types: ["MQTT"],
             permissions: {{publish: {{allow: ["t.acme", "t.acme.>"]}},
                            subscribe: {{allow: ["t.acme", "t.acme.>", "$MQTT.sub.>"]}}}}}}]
  }}
}}
mqtt {{ listen: "127.0.0.1:{mqtt}", ack_wait: "30s", max_ack_pending: 64
        {"consumer_memory_storage: true" if memory else ""} }}
""")
    log = open(os.path.join(d, "nats.log"), "w")

    def start():
        p = subprocess.Popen([binary, "-c", conf], stdout=log, stderr=log)
        t0 = time.time()
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{mon}/healthz", timeout=1).read()
                return p, time.time() - t0
            except Exception:
                time.sleep(0.02)

    server, _ = start()
    base = rss_kib(server.pid)
    socks, lat = [], []
    t0 = time.time()
    for i in range(n):
        t = time.time()
        s = connect(mqtt, f"dev-{i}", clean=False)
        subscribe(s, f"t/acme/d/dev-{i}/desired", qos)
        lat.append(time.time() - t)
        socks.append(s)
    total = time.time() - t0
    emit("connect_subscribe_total", total, "s", n)
    emit("connect_subscribe_p50", pct(lat, 0.5) * 1000, "ms", n)
    emit("connect_subscribe_p99", pct(lat, 0.99) * 1000, "ms", n)
    time.sleep(1)
    rss = rss_kib(server.pid)
    emit("server_rss", rss / 1024, "MiB", n)
    emit("rss_per_session", (rss - base) / n, "KiB", n)
    jsz = json.load(urllib.request.urlopen(f"http://127.0.0.1:{mon}/jsz", timeout=10))
    emit("consumers", jsz.get("consumers", 0), "count", n)

    # A desired write to every device (retained, QoS 1) from one publisher.
    pub = connect(mqtt, "publisher", clean=True)
    fd_to_i = {s.fileno(): i for i, s in enumerate(socks)}
    poller = select.epoll()
    for s in socks:
        s.setblocking(False)
        poller.register(s.fileno(), select.EPOLLIN)
    t0 = time.time()
    for i in range(n):
        topic = mstr(f"t/acme/d/dev-{i}/desired")
        pub.sendall(packet(0x33, topic + struct.pack("!H", (i % 65000) + 1) + b'{"v":1}'))
    got, bufs, acks = set(), {}, 0
    deadline = time.time() + 120
    while len(got) < n and time.time() < deadline:
        for fd, _ in poller.poll(1.0):
            i = fd_to_i[fd]
            try:
                data = socks[i].recv(65536)
            except BlockingIOError:
                continue
            bufs[i] = bufs.get(i, b"") + data
            if bufs[i] and bufs[i][0] & 0xF0 == 0x30:
                got.add(i)
    emit("desired_to_all", time.time() - t0, "s", n)
    emit("desired_delivered", len(got), "count", n)

    # Crash and recovery with n durable consumers on disk.
    for s in socks:
        s.close()
    pub.close()
    server.send_signal(signal.SIGKILL)
    server.wait()
    server, ready = start()
    emit("restart_to_healthy", ready, "s", n)
    time.sleep(1)
    emit("server_rss_after_restart", rss_kib(server.pid) / 1024, "MiB", n)
    server.send_signal(signal.SIGINT)
    server.wait()
    shutil.rmtree(d)


if __name__ == "__main__":
    main()
