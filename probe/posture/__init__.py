"""DNS and transport posture of a sending domain: SPF, DKIM, DMARC, MX, MTA-STS, TLS-RPT."""

from probe.posture.check import (
    MODES_NEEDING_INCLUDE,
    SPF_INCLUDE_BY_CLOUD,
    PostureSettings,
    check_domain,
    domain_of,
    settings_for,
)
from probe.posture.model import Check as PostureCheck
from probe.posture.model import PostureReport
from probe.posture.model import State as PostureState

__all__ = [
    "MODES_NEEDING_INCLUDE",
    "SPF_INCLUDE_BY_CLOUD",
    "PostureCheck",
    "PostureReport",
    "PostureSettings",
    "PostureState",
    "check_domain",
    "domain_of",
    "settings_for",
]
