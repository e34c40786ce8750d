"""Minimal syslog catcher on /dev/log for the testbed (OpenDKIM, OpenDMARC, policyd-spf log only there)."""

import contextlib
import os
import re
import socket
import sys

IDENT = re.compile(rb"^<\d+>(?:\w{3} [ \d]\d \d\d:\d\d:\d\d )?([\w./-]+?)(?:\[\d+\])?: ")
SPLIT = (b"opendkim", b"opendmarc", b"policyd-spf")  # also get a log file of their own


def main() -> None:
    sock_path, log_dir = sys.argv[1], sys.argv[2]
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(sock_path)
    os.chmod(sock_path, 0o666)
    with contextlib.ExitStack() as stack:

        def log(name: str):
            return stack.enter_context(open(os.path.join(log_dir, name), "ab", buffering=0))

        all_log = log("syslog.log")
        files = {ident: log(ident.decode() + ".log") for ident in SPLIT}
        while True:
            msg = sock.recv(65536).rstrip(b"\0\n")
            line = re.sub(rb"^<\d+>", b"", msg) + b"\n"
            all_log.write(line)
            match = IDENT.match(msg)
            ident = match.group(1).split(b"/")[-1] if match else b""
            if ident in files:
                files[ident].write(line)


if __name__ == "__main__":
    main()
