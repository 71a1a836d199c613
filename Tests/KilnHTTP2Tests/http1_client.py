"""HTTP/1.1 against `kiln serve --demo-routes`, over raw sockets (so that malformed input goes out exactly as
written). Prints PASS/FAIL lines; exits non-zero on any FAIL.

    http1_client.py bad-input PORT          each bad input → its status and a close; a good client beside it
    http1_client.py pipeline PORT           pipelined requests answered in order on one connection
    http1_client.py concurrent PORT         100 streamed responses at once over 20 keep-alive connections
    http1_client.py slow-head PORT SECONDS  a head sent a field at a time is cut off near the timeout
    http1_client.py grpc-beside PORT        grpcio on the same port while HTTP/1.1 connections are open
    http1_client.py slow-reader PORT PID    a client that stops reading: the server's memory stays bounded
"""
import socket
import sys
import threading
import time

failures = []


def check(ok, what):
    print(("PASS " if ok else "FAIL ") + what, flush=True)
    if not ok:
        failures.append(what)


def connect(port, timeout=10):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def read_until_close(s, limit=1 << 22):
    out = b""
    try:
        while len(out) < limit:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    except (socket.timeout, ConnectionResetError):
        pass
    return out


class Reader:
    """Reads whole HTTP/1.1 responses (content-length or chunked) from one keep-alive socket."""

    def __init__(self, s):
        self.s = s
        self.buf = b""

    def _fill(self):
        chunk = self.s.recv(65536)
        if not chunk:
            raise EOFError("connection closed")
        self.buf += chunk

    def _line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _take(self, n):
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def response(self):
        status = int(self._line().split(b" ")[1])
        headers = {}
        while True:
            line = self._line()
            if not line:
                break
            name, value = line.split(b":", 1)
            headers[name.strip().lower().decode()] = value.strip().decode()
        body = b""
        trailers = {}
        if headers.get("transfer-encoding") == "chunked":
            while True:
                size = int(self._line().split(b";")[0], 16)
                if size == 0:
                    while True:
                        line = self._line()
                        if not line:
                            break
                        name, value = line.split(b":", 1)
                        trailers[name.strip().lower().decode()] = value.strip().decode()
                    break
                body += self._take(size)
                self._line()
        elif "content-length" in headers:
            body = self._take(int(headers["content-length"]))
        return status, headers, body, trailers


def get(port, path="/"):
    s = connect(port)
    s.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    try:
        return Reader(s).response()
    finally:
        s.close()


def expected_stream(chunks):
    return b"".join(b"chunk %08d\n" % i for i in range(chunks))


def bad_input(port):
    stop = threading.Event()
    good = {"ok": 0, "bad": 0}

    def good_client():
        # One keep-alive connection, requests back to back, for as long as the bad inputs go on.
        s = connect(port)
        r = Reader(s)
        while not stop.is_set():
            s.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello")
            status, _, body, trailers = r.response()
            if status == 200 and body == b"hello" and trailers.get("x-echo-bytes") == "5":
                good["ok"] += 1
            else:
                good["bad"] += 1
        s.close()

    t = threading.Thread(target=good_client)
    t.start()
    cases = [
        ("Content-Length with Transfer-Encoding (smuggling)", 400,
         b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"),
        ("two different Content-Lengths", 400,
         b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"),
        ("a transfer coding that is not chunked", 400,
         b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\nabc"),
        ("oversized header fields", 431,
         b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + b"b" * 40000 + b"\r\n\r\n"),
        ("a request line of 1 MiB", 414,
         b"GET /" + b"a" * (1 << 20) + b" HTTP/1.1\r\nHost: t\r\n\r\n"),
        ("a body over the limit", 413,
         b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 9999999999\r\n\r\nabc"),
        ("an invalid chunk size", 400,
         b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"),
        ("a chunk size past 64 bits", 400,
         b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffff\r\nabc\r\n"),
        ("bare LF line endings", 400, b"GET / HTTP/1.1\nHost: t\n\n"),
        ("bare LF after the request line", 400, b"GET / HTTP/1.1\nHost: t\r\n\r\n"),
        ("no Host field", 400, b"GET / HTTP/1.1\r\n\r\n"),
        ("binary garbage", 400, bytes(range(1, 256)) * 4),
        ("an HTTP/2 upgrade is not taken", 200,
         b"GET / HTTP/1.1\r\nHost: t\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n"),
    ]
    for name, status, data in cases:
        s = connect(port)
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before it was all sent: the answer may still be there to read
        out = read_until_close(s) if status != 200 else Reader(s).response()
        s.close()
        if status == 200:
            check(out[0] == 200 and out[2] == b"kiln\n", name + f": answered as a plain request ({out[0]})")
            continue
        got = int(out.split(b" ")[1]) if out.startswith(b"HTTP/1.1 ") else None
        check(got == status, f"{name}: {status} (got {got})")
        check(b"connection: close" in out.lower(), f"{name}: the answer says the connection closes")
    stop.set()
    t.join(timeout=30)
    check(good["ok"] > 0 and good["bad"] == 0, f"the good client was served throughout ({good['ok']} calls, {good['bad']} wrong)")
    status, _, body, _ = get(port)
    check(status == 200 and body == b"kiln\n", "the server still answers")


def pipeline(port):
    s = connect(port)
    # Three requests in one write; the middle one's body follows its head in the same segment.
    s.sendall(b"GET /stream?chunks=50 HTTP/1.1\r\nHost: t\r\n\r\n"
              b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc"
              b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"
              b"GET /nope HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    r = Reader(s)
    got = [r.response() for _ in range(4)]
    check(got[0][0] == 200 and got[0][2] == expected_stream(50) and got[0][3].get("x-chunks") == "50",
          "first: the streamed response, whole, chunked, with its trailer")
    check(got[1][0] == 200 and got[1][2] == b"abc", "second: the echo of its own body")
    check(got[2][0] == 200 and got[2][2] == b"kiln\n", "third: the fixed route")
    check(got[3][0] == 404 and got[3][1].get("connection") == "close", "fourth: 404, and the connection closes as asked")
    check(read_until_close(s) == b"", "nothing after the last response")
    s.close()


def concurrent(port):
    results = []
    lock = threading.Lock()

    def worker(i):
        s = connect(port, timeout=60)
        r = Reader(s)
        for j in range(5):
            chunks = 20 + (i * 5 + j) % 40
            s.sendall(b"GET /stream?chunks=%d&delay_ms=2 HTTP/1.1\r\nHost: t\r\n\r\n" % chunks)
            status, headers, body, trailers = r.response()
            ok = status == 200 and body == expected_stream(chunks) and trailers.get("x-chunks") == str(chunks)
            with lock:
                results.append(ok)
        s.close()

    # 20 connections × 5 requests each: 100 streamed responses, 20 at a time on keep-alive connections.
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(20)]
    start = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    check(len(results) == 100 and all(results), f"100 streamed responses complete and in order ({sum(results)} of {len(results)}, {time.time() - start:.1f} s)")


def slow_head(port, seconds):
    s = connect(port, timeout=seconds + 10)
    start = time.time()
    s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n")
    closed_after = None
    try:
        for _ in range(int(seconds * 10) + 60):
            s.sendall(b"X-Slow: y\r\n")
            time.sleep(0.1)
    except (BrokenPipeError, ConnectionResetError):
        closed_after = time.time() - start
    out = read_until_close(s)
    if closed_after is None:
        closed_after = time.time() - start
    check(out.startswith(b"HTTP/1.1 408 "), f"a head still arriving after {seconds} s is answered 408 ({out[:30]!r})")
    check(seconds <= closed_after < seconds + 4, f"and cut off near the timeout ({closed_after:.1f} s)")
    status, _, body, _ = get(port)
    check(status == 200 and body == b"kiln\n", "the server still answers")


def grpc_beside(port):
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    # HTTP/1.1 connections held open: some idle after a response, some in the middle of a request.
    idle = []
    for _ in range(10):
        s = connect(port)
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        Reader(s).response()
        idle.append(s)
    partial = []
    for _ in range(10):
        s = connect(port)
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nhalf")
        partial.append(s)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = health_pb2_grpc.HealthStub(channel)
    ok = 0
    for _ in range(50):
        r = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        ok += r.status == health_pb2.HealthCheckResponse.SERVING
    check(ok == 50, f"grpcio's 50 health checks on the same port answered SERVING ({ok})")
    for s in partial:
        s.sendall(b"x" * 96)
        status, _, body, _ = Reader(s).response()
        check(status == 200 and body == b"half" + b"x" * 96, "an HTTP/1.1 request begun before the gRPC calls completes after them")
        break
    for s in idle[:1]:
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        check(Reader(s).response()[0] == 200, "an idle keep-alive connection still serves")
    for s in idle + partial:
        s.close()
    channel.close()


def rss(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def slow_reader(port, pid):
    get(port, "/bytes?n=1000000")  # warm up
    baseline = rss(pid)
    total = 64 << 20
    s = connect(port, timeout=30)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    s.sendall(b"GET /bytes?n=%d HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n" % total)
    peak = baseline
    # Read nothing for two seconds: the server must stop producing, not buffer the 64 MiB.
    for _ in range(20):
        time.sleep(0.1)
        peak = max(peak, rss(pid))
    received = b""
    head_end = -1
    count = 0
    mismatch = False
    while True:
        chunk = s.recv(1 << 20)
        if not chunk:
            break
        if head_end < 0:
            received += chunk
            head_end = received.find(b"\r\n\r\n")
            if head_end < 0:
                continue
            chunk = received[head_end + 4:]
        expected = bytes((count + i) % 251 for i in range(min(len(chunk), 4096)))
        if chunk[:len(expected)] != expected:
            mismatch = True
        count += len(chunk)
        if count % (8 << 20) < len(chunk):
            peak = max(peak, rss(pid))
    s.close()
    growth = peak - baseline
    check(count == total and not mismatch, f"every byte arrived in order ({count} of {total})")
    check(growth < (16 << 20), f"the server's RSS grew by {growth >> 10} KiB while the reader stalled (bound 16 MiB)")


if __name__ == "__main__":
    command, port = sys.argv[1], int(sys.argv[2])
    if command == "bad-input":
        bad_input(port)
    elif command == "pipeline":
        pipeline(port)
    elif command == "concurrent":
        concurrent(port)
    elif command == "slow-head":
        slow_head(port, float(sys.argv[3]))
    elif command == "grpc-beside":
        grpc_beside(port)
    elif command == "slow-reader":
        slow_reader(port, int(sys.argv[3]))
    sys.exit(1 if failures else 0)
