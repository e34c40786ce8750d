"""The one exception probe code raises for expected failures: a stage, a reason and a sentence."""

from __future__ import annotations

import errno
import os
import resource

from probe.result import Reason, SmtpReceipt, Stage


class ProbeFailure(Exception):
    """An expected failure of one probe stage (never a bug): becomes a result, not a traceback.

    ``message`` names what failed (stage, host:port, the server's reply) and must never contain
    a secret; ``remedy`` says what an operator can do about it, when we know.
    """

    def __init__(
        self,
        stage: Stage,
        reason: Reason,
        message: str,
        *,
        remedy: str | None = None,
        reply_code: int | None = None,
        reply: str | None = None,
    ) -> None:
        super().__init__(message)
        self.stage = stage
        self.reason = reason
        self.message = message
        self.remedy = remedy
        self.reply_code = reply_code
        self.reply = reply
        # Filled in by the SMTP stage so a failed result still shows what the relay said.
        self.receipt: SmtpReceipt | None = None
        self.phases: dict[str, float] = {}
        self.probe_id: str | None = None
        self.what = message  # the part after "<stage> <where>: " when made by ``at``

    @classmethod
    def at(
        cls,
        stage: Stage,
        reason: Reason,
        where: str | None,
        what: str,
        *,
        remedy: str | None = None,
        reply_code: int | None = None,
        reply: str | None = None,
    ) -> ProbeFailure:
        """The failure of ``stage`` at ``where`` (e.g. "smtp host:587"), worded "<stage> <where>: <what>"."""
        place = f"{stage.value} {where}" if where else stage.value
        failure = cls(
            stage, reason, f"{place}: {what}", remedy=remedy, reply_code=reply_code, reply=reply
        )
        failure.what = what
        return failure

    def on_side(self, side: str, stage: Stage) -> ProbeFailure:
        """The same failure told from the side that met it ("SMTP", "IMAP"), at that side's stage.

        A token is shared by SMTP and IMAP of one app; the operator needs to know which side
        could not get one (docs/architecture.md, "Reasons").
        """
        failure = ProbeFailure.at(
            stage, self.reason, None, f"{side} {self.what}", remedy=self.remedy
        )
        failure.__cause__ = self.__cause__
        return failure


#: errno values that mean this host ran out of something: the relay was never asked.
EXHAUSTED = {
    errno.EMFILE: "file descriptors",
    errno.ENFILE: "file descriptors (system-wide)",
    errno.ENOMEM: "memory",
    errno.ENOBUFS: "network buffers",
}
#: errno values of a file that was readable when the config was loaded and is not any more.
UNREADABLE = frozenset({errno.EACCES, errno.ENOENT, errno.EISDIR, errno.EPERM})


def _os_errors(exc: BaseException) -> list[OSError]:
    chain: list[OSError] = []
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            break
        if isinstance(seen, OSError):
            chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    return chain


def _out_of_descriptors() -> bool:
    """Whether this process is at its descriptor limit now: running out surfaces as many things
    besides EMFILE (a lazy import's LookupError, a thread that cannot start)."""
    try:
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        used = len(os.listdir("/proc/self/fd"))
    except OSError as exc:  # listing needs a descriptor of its own
        return exc.errno in (errno.EMFILE, errno.ENFILE)
    return soft != resource.RLIM_INFINITY and used + 1 >= soft


def local_failure(
    stage: Stage, exc: BaseException, doing: str, *, file: str | None = None
) -> ProbeFailure | None:
    """An ``internal_error`` naming the local cause when ``exc`` is this host's problem (out of
    descriptors or memory, or ``file`` unreadable); None when it is not (docs/architecture.md,
    "Reasons": a local problem is never blamed on the relay)."""
    for err in _os_errors(exc):
        what = EXHAUSTED.get(err.errno or 0)
        if what is not None:
            return ProbeFailure.at(
                stage,
                Reason.INTERNAL_ERROR,
                "local",
                f"{doing}: this host is out of {what} ({os.strerror(err.errno or 0)})",
                remedy=f"raise relayprobe's limit for {what} (ulimit -n, systemd LimitNOFILE, "
                "the container's limits) or find what holds them (ls /proc/<pid>/fd); the relay "
                "was not reached, so this says nothing about it",
            )
        if file is not None and err.errno in UNREADABLE:
            return ProbeFailure.at(
                stage,
                Reason.INTERNAL_ERROR,
                "local",
                f"{doing}: cannot read {file} ({os.strerror(err.errno or 0)})",
                remedy=f"{file} was readable when the config was loaded: check that it still "
                "exists and that relayprobe's user may read it, then reload",
            )
    if _out_of_descriptors():
        return local_failure(stage, OSError(errno.EMFILE, os.strerror(errno.EMFILE)), doing)
    return None
