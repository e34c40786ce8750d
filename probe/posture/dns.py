"""DNS lookups for the posture checks (dnspython), with DNS trouble classified apart from absence."""

from __future__ import annotations

import time
from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.resolver

from probe.config.fields import parse_dns_server
from probe.posture.model import Check, State

#: Default per-lookup budget in seconds; explanations inside a probe use a shorter one.
DEFAULT_TIMEOUT = 5.0


class DnsTrouble(Exception):
    """The DNS could not answer (timeout, SERVFAIL, REFUSED, a lame answer): not a posture finding.

    ``kind`` is one of ``timeout``, ``servfail``, ``refused``, ``lame``, ``error`` (or ``busy``:
    the record parser was held by other checks too long); the message
    names the query and the server, so the operator can retry it with dig.
    """

    def __init__(self, kind: str, name: str, rdtype: str, server: str, detail: str = "") -> None:
        self.kind, self.name, self.rdtype, self.server = kind, name, rdtype, server
        what = {
            "timeout": "no answer (timeout)",
            "servfail": "SERVFAIL",
            "refused": "REFUSED",
            "lame": "a lame answer (not authoritative, no recursion)",
        }.get(kind, detail or kind)
        text = detail if kind == "busy" else f"{rdtype} {name}: {what} from {server}"
        super().__init__(text)


@dataclass(frozen=True)
class Answer:
    """What one lookup found: the records (text form; TXT strings joined) and how it ended.

    ``status`` is ``ok`` (records present), ``nodata`` (the name exists, no record of this type)
    or ``nxdomain`` (the name does not exist). ``cname`` is the first alias followed, if any.
    """

    name: str
    rdtype: str
    status: str
    records: tuple[str, ...] = ()
    cname: str | None = None


class Resolver:
    """One DNS server (or the system resolver) with a lifetime per lookup.

    dnspython's resolver is exposed as ``.dnspython`` so checkdmarc and pyspf ask the same
    server: nothing in the posture checks falls back to another resolver.
    """

    def __init__(self, server: str | None = None, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        if server:
            ip, port = parse_dns_server(server)
            res = dns.resolver.Resolver(configure=False)
            res.nameservers = [ip]
            res.port = port
            self.server = server if port != 53 else ip
        else:
            res = dns.resolver.Resolver()
            self.server = "system resolver (" + ", ".join(str(n) for n in res.nameservers) + ")"
        # One UDP try may be lost; let dnspython retry within the lifetime (like dig +tries=3).
        res.timeout = min(1.0, timeout)
        res.lifetime = timeout
        res.cache = None  # every run asks afresh: change detection must see the current value
        self.dnspython = res
        self.timeout = timeout
        self.timeouts = 0  # lookups of this run that timed out

    #: monotonic time after which no lookup starts (an explanation's whole budget); None: none
    deadline: float | None = None

    def lookup(self, name: str, rdtype: str) -> Answer:
        """Look ``name`` up; DnsTrouble when the server could not answer."""
        lifetime = self.timeout
        if self.deadline is not None:
            lifetime = min(lifetime, self.deadline - time.monotonic())
            if lifetime <= 0:
                raise DnsTrouble("timeout", name, rdtype, self.server, "time budget spent")
        if self.timeouts >= 2:
            # A server that let two lookups time out is not asked again in this run: a domain's
            # checks would otherwise wait a full lifetime per record.
            raise DnsTrouble("timeout", name, rdtype, self.server)
        try:
            ans = self.dnspython.resolve(
                name, rdtype, raise_on_no_answer=False, search=False, lifetime=lifetime
            )
        except dns.resolver.NXDOMAIN:
            return Answer(name, rdtype, "nxdomain")
        except dns.exception.Timeout:
            self.timeouts += 1
            raise DnsTrouble("timeout", name, rdtype, self.server) from None
        except dns.resolver.NoNameservers as exc:
            raise DnsTrouble(_no_nameservers_kind(exc), name, rdtype, self.server) from None
        except dns.exception.DNSException as exc:
            raise DnsTrouble("error", name, rdtype, self.server, str(exc)) from None
        response = ans.response
        if ans.rrset is None:
            flags = response.flags
            lame = not flags & dns.flags.AA and not flags & dns.flags.RA and not response.answer
            if lame and any(r.rdtype == dns.rdatatype.NS for r in response.authority):
                # A referral from a server that neither answers for the zone nor recurses.
                raise DnsTrouble("lame", name, rdtype, self.server)
            return Answer(name, rdtype, "nodata")
        cname = None
        qname = dns.name.from_text(name)
        if ans.canonical_name != qname:
            cname = ans.canonical_name.to_text(omit_final_dot=True)
        return Answer(name, rdtype, "ok", tuple(_text(r) for r in ans.rrset), cname)

    def cname(self, name: str) -> Answer:
        """The CNAME at ``name`` itself (no chasing), for "where does this selector point"."""
        return self.lookup(name, "CNAME")


def _text(rdata: object) -> str:
    strings = getattr(rdata, "strings", None)
    if strings is not None:  # TXT: character-strings joined without spaces (RFC 7208 3.3)
        return b"".join(strings).decode("utf-8", "replace")
    exchange = getattr(rdata, "exchange", None)
    if exchange is not None:  # MX
        return f"{rdata.preference} {exchange.to_text(omit_final_dot=True)}"  # type: ignore[attr-defined]
    target = getattr(rdata, "target", None)
    if target is not None:  # CNAME
        return target.to_text(omit_final_dot=True)
    return rdata.to_text()  # type: ignore[attr-defined]


def _no_nameservers_kind(exc: dns.resolver.NoNameservers) -> str:
    """SERVFAIL or REFUSED from the (only) server, read from dnspython's error list."""
    for err in exc.kwargs.get("errors", []) or []:
        # entries are (server, tcp, port, error, response)
        response = err[4] if len(err) > 4 else None
        if isinstance(response, dns.message.Message):
            rcode = response.rcode()
            if rcode == dns.rcode.REFUSED:
                return "refused"
            if rcode == dns.rcode.SERVFAIL:
                return "servfail"
        if isinstance(err[3] if len(err) > 3 else None, dns.exception.Timeout):
            return "timeout"
    return "servfail"


def trouble_check(
    name: str, trouble: DnsTrouble, *, record: str | None = None, value: str | None = None
) -> Check:
    """The check ``name`` when DNS could not answer: state dns_error, never a posture failure."""
    return Check(
        name,
        State.DNS_ERROR,
        f"DNS trouble, nothing known: {trouble}",
        "a DNS problem, not a posture failure: check the DNS server (--dns-server, "
        "posture.dns_server) or retry; the next run tries again",
        record=record,
        value=value,
        details={"dns_error": trouble.kind},
    )
