"""The one exception probe code raises for expected failures: a stage, a reason and a sentence."""

from __future__ import annotations

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
        return cls(
            stage, reason, f"{place}: {what}", remedy=remedy, reply_code=reply_code, reply=reply
        )
