"""Postfix pipe helper of the testbed: sleep N seconds, then deliver the message over LMTP."""

import re
import smtplib
import sys
import time

EX_TEMPFAIL = 75  # Postfix keeps the message queued and retries


def main() -> int:
    # argv: hop=N ext=EXTENSION from=SENDER to=RECIPIENT (prefixed: any of them may be empty).
    nexthop, extension, sender, recipient = (a.split("=", 1)[1] for a in sys.argv[1:5])
    data = sys.stdin.buffer.read()
    # user+delay7@probe.test waits 7 s; otherwise the nexthop of `delay:N` (tb switch delay N).
    match = re.fullmatch(r"delay(\d+)", extension)
    seconds = int(match.group(1)) if match else int(nexthop) if nexthop.isdigit() else 0
    time.sleep(seconds)
    try:
        with smtplib.LMTP("127.0.0.1", 10024, timeout=60) as lmtp:
            lmtp.sendmail(sender, [recipient], data)
    except (OSError, smtplib.SMTPException) as exc:
        print(f"delay-lmtp: LMTP 127.0.0.1:10024 failed for {recipient}: {exc}", file=sys.stderr)
        return EX_TEMPFAIL
    return 0


if __name__ == "__main__":
    sys.exit(main())
