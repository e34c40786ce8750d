"""Microsoft 365 SMTP status codes and Entra (AADSTS) errors mapped to reasons and admin remedies."""

from __future__ import annotations

import re
from dataclasses import dataclass

from probe.result import Reason

_ENHANCED = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")


@dataclass(frozen=True)
class Code:
    """One known reply: enhanced code (or range), optional text fragment, reason, remedy."""

    enhanced: str  # "5.7.139" or a range "5.7.700-749"
    reason: Reason
    remedy: str
    example: str  # a real (or documented) reply line; the table test classifies it
    match: str | None = None  # lower-case fragment that must appear (variants of one code)

    def covers(self, enhanced: str, lowered: str) -> bool:
        if self.match is not None and self.match not in lowered:
            return False
        if "-" not in self.enhanced:
            return enhanced == self.enhanced
        prefix, _, span = self.enhanced.rpartition(".")
        lo, hi = (int(x) for x in span.split("-"))
        head, _, last = enhanced.rpartition(".")
        return head == prefix and last.isdigit() and lo <= int(last) <= hi


_SMTP_AUTH = "Set-CASMailbox -Identity <mailbox> -SmtpClientAuthenticationDisabled $false"
_SP = (
    "New-ServicePrincipal -AppId <client_id> -ObjectId <Enterprise Application object id, "
    "not the App Registration's>"
)
_FULL = "Add-MailboxPermission -Identity <mailbox> -User <service principal id> -AccessRights FullAccess"
_SENDAS = "Add-RecipientPermission -Identity <mail_from> -Trustee <mailbox or service principal> -AccessRights SendAs"
_THROTTLE = "Microsoft throttles this mailbox; the probe backs off. "
R = Reason
#: An IMAP XOAUTH2 login refused although the token was issued: Exchange-side permissions.
IMAP_OAUTH_REMEDY = (
    f"the token was refused for this mailbox: register the app in Exchange ({_SP}), "
    f"grant the mailbox ({_FULL}) and admin-consent IMAP.AccessAsApp"
)

#: Most specific first: entries with a text fragment precede the plain code.
SMTP_CODES: tuple[Code, ...] = (
    # --- AUTH ----------------------------------------------------------------------------------
    Code("5.7.139", R.AUTH_BASIC_DISABLED,
         "basic authentication is blocked (authentication policy or security defaults): switch "
         "the target to auth.method oauth2", "535 5.7.139 Authentication unsuccessful, basic "
         "authentication is disabled. [AM0PR01CA0001]", match="basic authentication is disabled"),
    Code("5.7.139", R.AUTH_FAILED,
         f"SMTP AUTH is off for the tenant: {_SMTP_AUTH} (per mailbox) or Set-TransportConfig "
         "-SmtpClientAuthenticationDisabled $false", "535 5.7.139 Authentication unsuccessful, "
         "SmtpClientAuthentication is disabled for the Tenant. Visit "
         "https://aka.ms/smtp_auth_disabled for more information.", match="for the tenant"),
    Code("5.7.139", R.AUTH_FAILED, f"SMTP AUTH is off for this mailbox: {_SMTP_AUTH}",
         "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the "
         "Mailbox. Visit https://aka.ms/smtp_auth_disabled for more information.",
         match="for the mailbox"),
    Code("5.7.139", R.AUTH_FAILED,
         "Entra refused the sign-in (Conditional Access, MFA or security defaults): exclude the "
         "probe account or use app-only OAuth (auth.method oauth2)", "535 5.7.139 Authentication "
         "unsuccessful, the request did not meet the criteria to be authenticated successfully. "
         "Contact your administrator."),
    Code("5.7.3", R.AUTH_FAILED,
         f"the token or password was refused. OAuth: register the app in Exchange ({_SP}), grant "
         f"the mailbox ({_FULL}) and admin-consent SMTP.SendAsApp/IMAP.AccessAsApp; password: "
         "check username and password", "535 5.7.3 Authentication unsuccessful "
         "[SN2PR00CA0018.namprd00.prod.outlook.com]"),
    Code("5.7.30", R.AUTH_BASIC_DISABLED,
         "basic authentication for SMTP AUTH is retired: switch the target to auth.method oauth2",
         "550 5.7.30 Basic authentication is not supported for Client Submission."),
    Code("5.5.124", R.AUTH_FAILED,
         "the XOAUTH2 data was malformed: auth.username must be the mailbox address and the token "
         "a raw access token", "501 5.5.124 Invalid XOAUTH2 auth data"),
    Code("5.7.57", R.AUTH_FAILED,
         "MAIL FROM came without a successful AUTH: configure smtp.auth (STARTTLS first) or use "
         "mode connector/direct_send on the tenant MX", "530 5.7.57 Client not authenticated to "
         "send mail. [DM5PR13CA0001]"),
    # --- sender rights ----------------------------------------------------------------------------
    Code("5.2.252", R.THROTTLED,
         f"{_THROTTLE}Cause: repeated Send As denials; fix mail_from or {_SENDAS}",
         "550 5.2.252 Sender throttled due to continuous send as denied errors", match="throttled"),
    Code("5.2.252", R.SEND_AS_DENIED,
         f"mail_from must be the authenticated mailbox, or grant it: {_SENDAS}",
         "554 5.2.252 SendAsDenied; probe@contoso.com not allowed to send as other@contoso.com; "
         "STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied"),
    Code("5.7.60", R.SEND_AS_DENIED,
         f"mail_from must be the authenticated mailbox, or grant it: {_SENDAS}",
         "550 5.7.60 SMTP; Client does not have permissions to send as this sender"),
    Code("5.2.0", R.SEND_AS_DENIED, f"mail_from must be the authenticated mailbox, or: {_SENDAS}",
         "554 5.2.0 STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied",
         match="sendasdenied"),
    Code("5.2.0", R.THROTTLED,
         f"{_THROTTLE}The mailbox exceeded 10,000 recipients per day; wait or spread the load",
         "554 5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException",
         match="submissionquotaexceeded"),
    # --- throttling -----------------------------------------------------------------------------
    Code("4.3.2", R.THROTTLED,
         "the recipient mailbox is throttled (too many concurrent deliveries); it retries later",
         "432 4.3.2 STOREDRV.Deliver; recipient thread limit exceeded", match="recipient thread"),
    Code("4.3.2", R.THROTTLED,
         f"{_THROTTLE}More than 3 concurrent SMTP connections for this mailbox: find the other "
         "clients using it", "432 4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded",
         match="sender thread limit"),
    Code("4.3.2", R.THROTTLED,
         f"{_THROTTLE}More than 3 concurrent SMTP connections for this mailbox: find the other "
         "clients using it", "432 4.3.2 Concurrent connections limit exceeded. Visit "
         "https://aka.ms/concurrent_sending for more information.", match="concurrent connections"),
    Code("5.2.251", R.THROTTLED, f"{_THROTTLE}Cause: the sending mailbox is full; empty Sent Items",
         "550 5.2.251 Sender throttled due to continuous mailbox full errors"),
    Code("5.2.253", R.THROTTLED,
         f"{_THROTTLE}Cause: invalid license; assign an Exchange Online license to the mailbox",
         "550 5.2.253 Sender throttled due to continuous invalid license errors"),
    Code("5.2.254", R.THROTTLED, f"{_THROTTLE}Cause: too many recipients per message",
         "550 5.2.254 Sender throttled due to continuous too many recipients errors"),
    Code("5.2.255", R.THROTTLED, f"{_THROTTLE}Cause: invalid recipients; check rcpt_to",
         "550 5.2.255 Sender throttled due to continuous invalid recipients errors"),
    Code("5.2.121", R.THROTTLED, "the recipient's hourly receive limit from this sender is hit",
         "550 5.2.121 Recipient's per hour message receive limit from specific sender exceeded"),
    Code("5.2.122", R.THROTTLED, "the recipient's hourly receive limit is hit",
         "550 5.2.122 Recipient's per hour message receive limit exceeded"),
    Code("4.7.500-699", R.THROTTLED, "temporary restriction on suspicious activity; retries later",
         "451 4.7.500 Server busy. Please try again later"),
    Code("4.7.850-899", R.THROTTLED, "temporary restriction on this IP or tenant; retries later",
         "451 4.7.850 Access denied, please try again later"),
    Code("4.5.3", R.SMTP_TEMPORARY_FAILURE, "too many recipients for one domain in one message",
         "452 4.5.3 Too many recipients"),
    Code("5.2.2", R.SMTP_REJECTED,
         "the sending mailbox is full (Sent Items count): empty it or raise its quota",
         "554 5.2.2 mailbox full; STOREDRV.Submission.Exception:QuotaExceededException."
         "MapiExceptionShutoffQuotaExceeded"),
    # --- relay modes ----------------------------------------------------------------------------
    Code("5.7.64", R.AUTH_FAILED,
         "no inbound connector matched: the client certificate CN/SAN must equal the connector's "
         "TlsSenderCertificateName (Set-InboundConnector -TlsSenderCertificateName <name> "
         "-RequireTls $true) or the static IP must be listed", "550 5.7.64 TenantAttribution; "
         "Relay Access Denied"),
    Code("5.7.68", R.AUTH_FAILED,
         "RejectDirectSend is on: create a partner inbound connector for this source "
         "(New-InboundConnector) or Set-OrganizationConfig -RejectDirectSend $false",
         "550 5.7.68 TenantInboundAttribution; Direct Send not allowed for this organization "
         "from unauthorized sources"),
    Code("5.7.750", R.SMTP_REJECTED,
         "the sender domain is not a verified accepted domain of the tenant: add and verify it "
         "(New-AcceptedDomain) or change mail_from", "550 5.7.750 Service unavailable. Client "
         "blocked from sending from unregistered domains"),
    Code("5.7.700-749", R.SMTP_REJECTED,
         "the tenant is blocked from sending (threshold or IP not accepted): open a Microsoft "
         "support case", "550 5.7.708 Access denied, traffic not accepted from this IP"),
    Code("5.4.1", R.SMTP_REJECTED,
         "the recipient domain is not accepted here: rcpt_to must be in an accepted domain of this "
         "tenant (direct send: use the tenant's own MX host)", "550 5.4.1 Recipient address "
         "rejected: Access denied. AS(201806281) [Relay Access Denied]"),
    Code("5.5.105", R.SMTP_REJECTED, "High Volume Email accounts send to internal recipients only",
         "550 5.5.105 External sending is not supported for High Volume Email accounts"),
    # --- policy ---------------------------------------------------------------------------------
    Code("5.1.8", R.SMTP_REJECTED,
         "the account is blocked for sending spam: release it under Restricted entities in the "
         "Microsoft Defender portal", "550 5.1.8 Access denied, bad outbound sender"),
    Code("5.7.501", R.SMTP_REJECTED, "banned sender (spam abuse): open a Microsoft support case",
         "550 5.7.501 Access denied, spam abuse detected"),
    Code("5.7.502", R.SMTP_REJECTED, "banned sender: open a Microsoft support case",
         "550 5.7.502 Access denied, banned sender"),
    Code("5.7.503", R.SMTP_REJECTED, "banned sender: open a Microsoft support case",
         "550 5.7.503 Access denied, banned sender"),
    Code("5.7.511", R.SMTP_REJECTED, "banned sender: request delisting via the delist portal",
         "550 5.7.511 Access denied, banned sender"),
    Code("5.7.509", R.SMTP_REJECTED,
         "the sending domain fails DMARC: align SPF (include the relay) or DKIM-sign mail_from's "
         "domain", "550 5.7.509 Access denied, sending domain [contoso.com] does not pass DMARC "
         "verification and has a DMARC policy of reject"),
    Code("5.7.512", R.SMTP_REJECTED, "the message has no valid From header (RFC 5322 3.6.2)",
         "550 5.7.512 Access denied, message must be RFC 5322 section 3.6.2 compliant"),
    Code("5.7.23", R.SMTP_REJECTED, "SPF fails at the destination: add the relay to the SPF record",
         "550 5.7.23 The message was rejected because of Sender Policy Framework violation"),
    Code("5.7.25", R.SMTP_REJECTED, "the IPv6 sender needs a PTR record",
         "550 5.7.25 The sending IPv6 address must have a reverse DNS record"),
    Code("4.7.26", R.SMTP_TEMPORARY_FAILURE, "IPv6 mail must pass SPF or DKIM: sign or fix SPF",
         "450 4.7.26 Unauthenticated email sent over IPv6 is not accepted"),
    Code("5.7.12", R.SMTP_REJECTED,
         "the recipient accepts only authenticated senders: send authenticated or "
         "Set-Mailbox -RequireSenderAuthenticationEnabled $false",
         "550 5.7.12 The sender was not authenticated by the organization"),
    Code("5.7.133-136", R.SMTP_REJECTED,
         "the recipient group or mailbox accepts only internal senders: "
         "Set-DistributionGroup/Set-Mailbox -RequireSenderAuthenticationEnabled $false",
         "550 5.7.133 RESOLVER.RST.SenderNotAuthenticatedForGroup; authentication required"),
    Code("5.1.1", R.SMTP_REJECTED, "rcpt_to does not exist: check the address",
         "550 5.1.1 RESOLVER.ADR.RecipNotFound; not found"),
    Code("5.1.10", R.SMTP_REJECTED, "rcpt_to does not exist: check the address",
         "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup"),
    Code("5.6.11", R.SMTP_REJECTED, "the message has bare line feeds: report this as a bug",
         "550 5.6.11 SMTPSEND.BareLinefeedsAreIllegal"),
    Code("5.3.3", R.SMTP_PROTOCOL_ERROR,
         "the server refused a command (e.g. SMTPUTF8 after XOAUTH2): report this as a bug",
         "502 5.3.3 Command not implemented"),
    Code("5.7.1", R.SMTP_REJECTED,
         "delivery not authorized (relay, transport rule or recipient restriction): the reply "
         "text says which", "550 5.7.1 Unable to relay"),
    Code("4.4.7", R.SMTP_TEMPORARY_FAILURE, "the message expired in a queue: check the next hop",
         "451 4.4.7 Message expired"),
    Code("4.4.316", R.SMTP_TEMPORARY_FAILURE,
         "Microsoft 365 could not connect to the next hop: check that server and its firewall",
         "451 4.4.316 Connection refused [Message=Socket error code 10061]"),
)  # fmt: skip


def enhanced_code(text: str) -> str | None:
    """The RFC 3463 enhanced status code in a reply text (``5.7.139``), if any."""
    match = _ENHANCED.search(text)
    return match.group(0) if match else None


def lookup(code: int, text: str) -> Code | None:
    """The table entry for a reply, matched by enhanced code (and class), then text variant."""
    enhanced = enhanced_code(text)
    if enhanced is None or str(code)[:1] != enhanced[:1]:
        return None  # a 4xx reply carrying a 5.x.x code is not Microsoft's; do not guess
    lowered = text.lower()
    return next((c for c in SMTP_CODES if c.covers(enhanced, lowered)), None)


#: Entra ID (AADSTS) errors from the token endpoint: code -> (meaning, remedy).
AADSTS: dict[str, tuple[str, str]] = {
    "AADSTS7000215": ("invalid client secret",
                      "the client secret is wrong: use the secret VALUE (not its ID) from App "
                      "registrations > Certificates & secrets, or create a new one"),
    "AADSTS7000222": ("client secret expired",
                      "the client secret has expired: create a new one under Certificates & "
                      "secrets and update client_secret_file"),
    "AADSTS700016": ("unknown application",
                     "client_id is not an app in this tenant: check client_id and tenant_id, or "
                     "admin-consent the multi-tenant app in this tenant"),
    "AADSTS90002": ("unknown tenant", "tenant_id does not exist: use the Directory (tenant) ID "
                    "or a verified domain, and the right cloud (authority)"),
    "AADSTS900023": ("malformed tenant", "tenant_id is malformed: use the Directory (tenant) ID"),
    "AADSTS90014": ("missing field", "the token request lacked a required field: report this"),
    "AADSTS65001": ("consent missing", "admin consent is missing: grant admin consent for "
                    "SMTP.SendAsApp / IMAP.AccessAsApp (Office 365 Exchange Online) on API "
                    "permissions"),
    "AADSTS7000112": ("application disabled", "the app or its service principal is disabled: "
                      "enable it under Enterprise applications (Enabled for users to sign in)"),
    "AADSTS700027": ("certificate not accepted", "the certificate is not registered on the app "
                     "or thumbprint/private key do not match: upload the certificate under "
                     "Certificates & secrets and set its SHA-1 thumbprint"),
    "AADSTS700024": ("assertion time invalid", "the client assertion is outside its valid "
                     "time: fix this host's clock (NTP)"),
    "AADSTS700023": ("certificate expired", "the client certificate has expired: upload a new "
                     "one and update certificate_file and thumbprint"),
    "AADSTS7000218": ("credential missing", "no client secret or assertion was sent: set "
                      "client_secret_file or certificate_file"),
    "AADSTS1002012": ("invalid scope", "scope must be https://outlook.office365.com/.default "
                      "for app-only IMAP/SMTP"),
    "AADSTS70011": ("invalid scope", "scope must be https://outlook.office365.com/.default"),
    "AADSTS500011": ("resource not found", "the scope's resource is not in the tenant: use "
                     "https://outlook.office365.com/.default and the right cloud"),
    "AADSTS53003": ("blocked by Conditional Access", "a Conditional Access policy blocks this "
                    "app: exclude the service principal or allow this location"),
    "AADSTS50020": ("account not in tenant", "the app is not in this tenant: check tenant_id"),
}  # fmt: skip


def aadsts_remedy(text: str) -> tuple[str, str] | None:
    """(AADSTS code, remedy) for the first known AADSTS code in ``text``."""
    for code in re.findall(r"AADSTS\d+", text):
        if code in AADSTS:
            return code, AADSTS[code][1]
    return None
