#!/usr/bin/python3
"""A fake systemd NOTIFY_SOCKET for tests (Bun has no unix datagram sockets).

    notify_listener.py --socket PATH [--watch MOUNTPOINT]... [--read FILE]...

Binds an AF_UNIX SOCK_DGRAM socket at PATH (the value a test puts in NOTIFY_SOCKET) and
prints one JSON object per line on stdout, flushed at once:

  {"event": "listening", "t": T}
  {"event": "mounted", "t": T, "path": MP}     first time MP shows up in /proc/self/mountinfo
                                               (polled every 5 ms while waiting for datagrams,
                                               and right before each datagram is reported)
  {"event": "message", "t": T, "data": "READY=1\\nSTATUS=serving", "pid": PID,
   "mounted": {MP: bool, ...}, "reads": {FILE: {"ok": bool, "sha256": H, "size": N,
   "error": E}, ...}}

`mounted` is taken for every message, right when it arrives; `reads` only for a message
that contains READY=1: each FILE is read completely (in a child `cat` under `timeout`, so a
hung mount cannot hang the listener) BEFORE the next datagram is looked at. So a test sees
what a client of systemd would see at the moment `systemctl start` returns.
T is time.monotonic() in seconds. The sender's PID comes from SO_PASSCRED credentials.
Exits on SIGTERM/SIGINT, removing the socket file. Standard library only.
"""
import argparse
import hashlib
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import time

SO_PASSCRED = 16
SCM_CREDENTIALS = 2


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def unescape(field):
    # /proc/self/mountinfo escapes space, tab, newline and backslash as \ooo
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and len(field) >= i + 4 and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mountpoints():
    with open("/proc/self/mountinfo", "r", encoding="utf-8", errors="replace") as f:
        return {unescape(line.split(" ")[4]) for line in f if line.strip()}


def read_file(path):
    try:
        r = subprocess.run(["timeout", "-k", "2", "20", "cat", "--", path], capture_output=True)
    except Exception as e:  # noqa: BLE001 - reported to the test
        return {"ok": False, "error": repr(e)}
    if r.returncode != 0:
        return {"ok": False, "error": "exit %d: %s" % (r.returncode, r.stderr.decode("utf-8", "replace").strip())}
    return {"ok": True, "size": len(r.stdout), "sha256": hashlib.sha256(r.stdout).hexdigest()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--socket", required=True)
    ap.add_argument("--watch", action="append", default=[])
    ap.add_argument("--read", action="append", default=[])
    a = ap.parse_args()

    stop = {"now": False}

    def on_signal(_sig, _frm):
        stop["now"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    try:
        os.unlink(a.socket)
    except FileNotFoundError:
        pass
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(a.socket)
    os.chmod(a.socket, 0o600)
    s.setsockopt(socket.SOL_SOCKET, SO_PASSCRED, 1)
    s.setblocking(False)
    emit({"event": "listening", "t": time.monotonic()})

    seen = set()

    def poll_mounts():
        current = mountpoints()
        for mp in a.watch:
            if mp not in seen and mp in current:
                seen.add(mp)
                emit({"event": "mounted", "t": time.monotonic(), "path": mp})
        return current

    try:
        while not stop["now"]:
            if len(seen) < len(a.watch):
                poll_mounts()
            try:
                ready, _, _ = select.select([s], [], [], 0.005)
            except InterruptedError:
                continue
            if not ready:
                continue
            try:
                data, anc, _flags, _addr = s.recvmsg(65536, socket.CMSG_SPACE(12))
            except BlockingIOError:
                continue
            # Mounts first (a "mounted" event is never later than a message that finds the
            # mount present), then the message.
            current = poll_mounts()
            t = time.monotonic()
            pid = None
            for level, typ, cdata in anc:
                if level == socket.SOL_SOCKET and typ == SCM_CREDENTIALS and len(cdata) >= 12:
                    pid, _uid, _gid = struct.unpack("iII", cdata[:12])
            text = data.decode("utf-8", "replace")
            msg = {"event": "message", "t": t, "data": text, "pid": pid,
                   "mounted": {mp: mp in current for mp in a.watch}}
            if "READY=1" in text.split("\n"):
                msg["reads"] = {p: read_file(p) for p in a.read}
            emit(msg)
    finally:
        s.close()
        try:
            os.unlink(a.socket)
        except FileNotFoundError:
            pass


if __name__ == "__main__":
    main()
