"""Microsoft 365 SMTP status codes and Entra (AADSTS) errors mapped to reasons and admin remedies."""

from __future__ import annotations

import re
from dataclasses import KW_ONLY, dataclass
from typing import NamedTuple

from probe.result import Reason

_ENHANCED = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")


@dataclass(frozen=True)
class Code:
    """One known reply: enhanced code (or range), optional text fragment, reason, remedy, and
    what it means and why it happens (``relayprobe explain`` prints all of it)."""

    enhanced: str  # "5.7.139" or a range "5.7.700-749"
    reason: Reason
    remedy: str  # the admin action, one line (also the result's `remedy`)
    example: str  # a real (or documented) reply line; the table test classifies it
    match: str | None = None  # lower-case fragment that must appear (variants of one code)
    _: KW_ONLY
    meaning: str  # what the reply says, in words
    cause: str  # why it usually happens
    docs: str | None = None  # Microsoft's page for it, where one is known (docs/m365.md)

    def covers_code(self, enhanced: str) -> bool:
        """True when ``enhanced`` is this entry's code or within its range (text not checked)."""
        if "-" not in self.enhanced:
            return enhanced == self.enhanced
        prefix, _, span = self.enhanced.rpartition(".")
        lo, hi = (int(x) for x in span.split("-"))
        head, _, last = enhanced.rpartition(".")
        return head == prefix and last.isdigit() and lo <= int(last) <= hi

    def covers(self, enhanced: str, lowered: str) -> bool:
        if self.match is not None and self.match not in lowered:
            return False
        return self.covers_code(enhanced)


_SMTP_AUTH = "Set-CASMailbox -Identity <mailbox> -SmtpClientAuthenticationDisabled $false"
_SP = (
    "New-ServicePrincipal -AppId <client_id> -ObjectId <Enterprise Application object id, "
    "not the App Registration's>"
)
_FULL = "Add-MailboxPermission -Identity <mailbox> -User <service principal id> -AccessRights FullAccess"
_SENDAS = "Add-RecipientPermission -Identity <mail_from> -Trustee <mailbox or service principal> -AccessRights SendAs"
_THROTTLE = "Microsoft throttles this mailbox; the probe backs off. "
_SEND_AS_CAUSE = (
    "mail_from is not the authenticated mailbox, and the mailbox (or app) has no Send As "
    "permission on that address"
)
# Microsoft's pages behind the entries below; which claim each one backs: docs/m365.md#status-codes.
_SMTP_AUTH_DOCS = "https://aka.ms/smtp_auth_disabled"
_OAUTH_DOCS = (
    "https://learn.microsoft.com/en-us/exchange/client-developer/legacy-protocols/"
    "how-to-authenticate-an-imap-pop-smtp-application-by-using-oauth"
)
_CONNECTOR_DOCS = (
    "https://learn.microsoft.com/en-us/defender-office-365/connectors-mail-flow-intelligence"
)
_OUTLOOK_COM_DOCS = (
    "https://techcommunity.microsoft.com/blog/microsoftdefenderforoffice365blog/"
    "strengthening-email-ecosystem-outlook%E2%80%99s-new-requirements-for-high%E2%80%90volume-"
    "senders/4399730"
)
_HVE_DOCS = (
    "https://learn.microsoft.com/en-us/exchange/mail-flow-best-practices/high-volume-mails-m365"
)
_HVE_TROUBLESHOOT = (
    "https://learn.microsoft.com/en-us/exchange/mail-flow-best-practices/"
    "troubleshoot-high-volume-email-m365"
)
_ACS_DOMAIN_DOCS = (
    "https://learn.microsoft.com/en-us/azure/communication-services/quickstarts/email/"
    "connect-email-communication-resource"
)
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
         "authentication is disabled. [AM0PR01CA0001]", match="basic authentication is disabled",
         meaning="authentication unsuccessful: basic authentication (a password) is disabled "
         "for this account",
         cause="an authentication policy or Entra security defaults block basic authentication, "
         "so SMTP AUTH with a password is refused whatever the password"),
    Code("5.7.139", R.AUTH_FAILED,
         f"SMTP AUTH is off for the tenant: {_SMTP_AUTH} (per mailbox) or Set-TransportConfig "
         "-SmtpClientAuthenticationDisabled $false", "535 5.7.139 Authentication unsuccessful, "
         "SmtpClientAuthentication is disabled for the Tenant. Visit "
         "https://aka.ms/smtp_auth_disabled for more information.", match="for the tenant",
         meaning="authentication unsuccessful: SMTP AUTH (client submission) is disabled for "
         "the whole tenant",
         cause="the tenant's SmtpClientAuthenticationDisabled is $true (the default for newer "
         "tenants) and the mailbox has no setting of its own that allows it",
         docs=_SMTP_AUTH_DOCS),
    Code("5.7.139", R.AUTH_FAILED, f"SMTP AUTH is off for this mailbox: {_SMTP_AUTH}",
         "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the "
         "Mailbox. Visit https://aka.ms/smtp_auth_disabled for more information.",
         match="for the mailbox",
         meaning="authentication unsuccessful: SMTP AUTH (client submission) is disabled for "
         "this mailbox",
         cause="the mailbox's SmtpClientAuthenticationDisabled is $true",
         docs=_SMTP_AUTH_DOCS),
    Code("5.7.139", R.AUTH_BASIC_DISABLED,
         "basic SMTP AUTH is blocked by tenant policy: switch the target to auth.method oauth2; "
         "an account that must use a password (High Volume Email) needs security defaults off "
         "and an authentication policy with -AllowBasicAuthSmtp (Set-AuthenticationPolicy)",
         "535 5.7.139 Authentication unsuccessful, the organization configuration doesn't allow "
         "this authentication request.", match="organization configuration",
         meaning="authentication unsuccessful: the organization's configuration does not allow "
         "this authentication request",
         cause="Entra security defaults, or an authentication policy without AllowBasicAuthSmtp "
         "applied to the account, block basic SMTP AUTH; Microsoft documents this reply for "
         "High Volume Email accounts",
         docs=_HVE_TROUBLESHOOT),
    Code("5.7.139", R.AUTH_FAILED,
         "Entra refused the sign-in (Conditional Access, MFA or security defaults): exclude the "
         "probe account or use app-only OAuth (auth.method oauth2)", "535 5.7.139 Authentication "
         "unsuccessful, the request did not meet the criteria to be authenticated successfully. "
         "Contact your administrator.",
         meaning="authentication unsuccessful: the sign-in did not meet the tenant's criteria",
         cause="Entra refused the sign-in behind SMTP AUTH: Conditional Access, multi-factor "
         "authentication or security defaults apply to the account"),
    Code("5.7.3", R.AUTH_FAILED,
         f"the token or password was refused. OAuth: register the app in Exchange ({_SP}), grant "
         f"the mailbox ({_FULL}) and admin-consent SMTP.SendAsApp/IMAP.AccessAsApp; password: "
         "check username and password", "535 5.7.3 Authentication unsuccessful "
         "[SN2PR00CA0018.namprd00.prod.outlook.com]",
         meaning="authentication unsuccessful: the password or OAuth token was refused",
         cause="Microsoft 365: a wrong password, an expired or wrong-audience token, or an app "
         "that is not registered in Exchange or has no permission on the mailbox. High Volume "
         "Email answers the same to wrong HVE account credentials; with OAuth the app must also "
         "be on the HVE account's allowed apps (Add-HVEAppAccess). Azure Communication Services "
         "(smtp.azurecomm.net) answers the same when the username is not <Communication "
         "Services resource name>.<Entra application ID>.<Entra tenant ID> ('|' between the "
         "parts works too) or an SMTP username resource's name, the password is not a client "
         "secret of that app, or the app has no role "
         "with Microsoft.Communication/CommunicationServices/Read and "
         "Microsoft.Communication/EmailServices/write on the resource",
         docs=_OAUTH_DOCS),
    Code("5.7.30", R.AUTH_BASIC_DISABLED,
         "basic authentication for SMTP AUTH is retired: switch the target to auth.method oauth2",
         "550 5.7.30 Basic authentication is not supported for Client Submission.",
         meaning="basic authentication is not supported for client submission",
         cause="Microsoft switched off basic authentication for SMTP AUTH for this account or "
         "tenant; only OAuth (XOAUTH2) is accepted"),
    Code("5.5.124", R.AUTH_FAILED,
         "the XOAUTH2 data was malformed: auth.username must be the mailbox address and the token "
         "a raw access token", "501 5.5.124 Invalid XOAUTH2 auth data",
         meaning="invalid XOAUTH2 auth data",
         cause="the SASL XOAUTH2 string was malformed: a wrong user= value, or something other "
         "than a raw access token after 'Bearer'"),
    Code("5.7.57", R.AUTH_FAILED,
         "MAIL FROM came without a successful AUTH: configure smtp.auth (STARTTLS first) or use "
         "mode connector/direct_send on the tenant MX", "530 5.7.57 Client not authenticated to "
         "send mail. [DM5PR13CA0001]",
         meaning="client not authenticated to send mail",
         cause="MAIL FROM was sent to the submission endpoint without a successful AUTH"),
    # --- sender rights ----------------------------------------------------------------------------
    Code("5.2.252", R.THROTTLED,
         f"{_THROTTLE}Cause: repeated Send As denials; fix mail_from or {_SENDAS}",
         "550 5.2.252 Sender throttled due to continuous send as denied errors", match="throttled",
         meaning="sender throttled due to continuous Send As denied errors",
         cause=f"earlier submissions kept failing with SendAsDenied ({_SEND_AS_CAUSE}), so "
         "Microsoft throttles the mailbox"),
    Code("5.2.252", R.SEND_AS_DENIED,
         f"mail_from must be the authenticated mailbox, or grant it: {_SENDAS}",
         "554 5.2.252 SendAsDenied; probe@contoso.com not allowed to send as other@contoso.com; "
         "STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied",
         meaning="Send As denied: the authenticated mailbox may not send as mail_from",
         cause=_SEND_AS_CAUSE),
    Code("5.7.60", R.SEND_AS_DENIED,
         f"mail_from must be the authenticated mailbox, or grant it: {_SENDAS}",
         "550 5.7.60 SMTP; Client does not have permissions to send as this sender",
         meaning="the client does not have permission to send as this sender",
         cause=_SEND_AS_CAUSE),
    Code("5.2.0", R.SEND_AS_DENIED, f"mail_from must be the authenticated mailbox, or: {_SENDAS}",
         "554 5.2.0 STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied",
         match="sendasdenied",
         meaning="submission refused: Send As denied", cause=_SEND_AS_CAUSE),
    Code("5.2.0", R.THROTTLED,
         f"{_THROTTLE}The mailbox exceeded 10,000 recipients per day; wait or spread the load",
         "554 5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException",
         match="submissionquotaexceeded",
         meaning="submission refused: the mailbox's submission quota is exceeded",
         cause="the mailbox sent to more recipients than its daily recipient limit"),
    # --- throttling -----------------------------------------------------------------------------
    Code("4.3.2", R.THROTTLED,
         "the recipient mailbox is throttled (too many concurrent deliveries); it retries later",
         "432 4.3.2 STOREDRV.Deliver; recipient thread limit exceeded", match="recipient thread",
         meaning="recipient thread limit exceeded",
         cause="too many messages are being delivered to the recipient mailbox at once"),
    Code("4.3.2", R.THROTTLED,
         f"{_THROTTLE}More than 3 concurrent SMTP connections for this mailbox: find the other "
         "clients using it", "432 4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded",
         match="sender thread limit",
         meaning="sender thread limit exceeded",
         cause="more than 3 SMTP connections submit as this mailbox at the same time"),
    Code("4.3.2", R.THROTTLED,
         f"{_THROTTLE}More than 3 concurrent SMTP connections for this mailbox: find the other "
         "clients using it", "432 4.3.2 Concurrent connections limit exceeded. Visit "
         "https://aka.ms/concurrent_sending for more information.", match="concurrent connections",
         meaning="concurrent connections limit exceeded",
         cause="more than 3 SMTP connections submit as this mailbox at the same time",
         docs="https://aka.ms/concurrent_sending"),
    Code("5.2.251", R.THROTTLED, f"{_THROTTLE}Cause: the sending mailbox is full; empty Sent Items",
         "550 5.2.251 Sender throttled due to continuous mailbox full errors",
         meaning="sender throttled due to continuous mailbox full errors",
         cause="submissions kept failing because the sending mailbox is full"),
    Code("5.2.253", R.THROTTLED,
         f"{_THROTTLE}Cause: invalid license; assign an Exchange Online license to the mailbox",
         "550 5.2.253 Sender throttled due to continuous invalid license errors",
         meaning="sender throttled due to continuous invalid license errors",
         cause="submissions kept failing because the mailbox has no valid Exchange Online "
         "license"),
    Code("5.2.254", R.THROTTLED, f"{_THROTTLE}Cause: too many recipients per message",
         "550 5.2.254 Sender throttled due to continuous too many recipients errors",
         meaning="sender throttled due to continuous too many recipients errors",
         cause="messages kept exceeding the recipients-per-message limit"),
    Code("5.2.255", R.THROTTLED, f"{_THROTTLE}Cause: invalid recipients; check rcpt_to",
         "550 5.2.255 Sender throttled due to continuous invalid recipients errors",
         meaning="sender throttled due to continuous invalid recipients errors",
         cause="messages kept going to recipients that do not exist"),
    Code("5.2.121", R.THROTTLED, "the recipient's hourly receive limit from this sender is hit",
         "550 5.2.121 Recipient's per hour message receive limit from specific sender exceeded",
         meaning="the recipient's per-hour receive limit from this sender is exceeded",
         cause="this sender sent the recipient more messages in an hour than it may receive "
         "from one sender"),
    Code("5.2.122", R.THROTTLED, "the recipient's hourly receive limit is hit",
         "550 5.2.122 Recipient's per hour message receive limit exceeded",
         meaning="the recipient's per-hour receive limit is exceeded",
         cause="the recipient received more messages in an hour than its limit allows"),
    Code("4.7.500-699", R.THROTTLED, "temporary restriction on suspicious activity; retries later",
         "451 4.7.500 Server busy. Please try again later",
         meaning="server busy, try again later: a temporary restriction",
         cause="Microsoft's anti-spam throttling: the sending IP or tenant changed its sending "
         "pattern, e.g. a new IP sending much more than before"),
    Code("4.7.850-899", R.THROTTLED, "temporary restriction on this IP or tenant; retries later",
         "451 4.7.850 Access denied, please try again later",
         meaning="access denied, try again later: a temporary restriction",
         cause="Microsoft restricts traffic from this IP address or tenant for a while"),
    Code("4.5.3", R.SMTP_TEMPORARY_FAILURE, "too many recipients for one domain in one message",
         "452 4.5.3 Too many recipients",
         meaning="too many recipients",
         cause="the message addresses more recipients than one transaction may carry"),
    Code("5.2.2", R.SMTP_REJECTED,
         "the sending mailbox is full (Sent Items count): empty it or raise its quota",
         "554 5.2.2 mailbox full; STOREDRV.Submission.Exception:QuotaExceededException."
         "MapiExceptionShutoffQuotaExceeded",
         meaning="mailbox full: the sending mailbox may not submit",
         cause="the sending mailbox (Sent Items counts) is over its send quota"),
    # --- relay modes ----------------------------------------------------------------------------
    Code("5.7.64", R.AUTH_FAILED,
         "no inbound connector matched: the client certificate CN/SAN must equal the connector's "
         "TlsSenderCertificateName (Set-InboundConnector -TlsSenderCertificateName <name> "
         "-RequireTls $true) or the static IP must be listed", "550 5.7.64 TenantAttribution; "
         "Relay Access Denied",
         meaning="TenantAttribution; relay access denied",
         cause="mail for outside the tenant arrived at its MX (connector mode) but matched no "
         "inbound connector: the client certificate's name or the source IP is not the "
         "connector's"),
    Code("5.7.68", R.AUTH_FAILED,
         "RejectDirectSend is on: create a partner inbound connector for this source "
         "(New-InboundConnector) or Set-OrganizationConfig -RejectDirectSend $false",
         "550 5.7.68 TenantInboundAttribution; Direct Send not allowed for this organization "
         "from unauthorized sources",
         meaning="TenantInboundAttribution; direct send not allowed for this organization from "
         "unauthorized sources",
         cause="RejectDirectSend is on, so unauthenticated mail from the tenant's own domains "
         "through its MX is refused unless a connector accepts the source"),
    Code("5.7.750", R.SMTP_REJECTED,
         "the sender domain is not a verified accepted domain of the tenant: add and verify it "
         "(New-AcceptedDomain) or change mail_from", "550 5.7.750 Service unavailable. Client "
         "blocked from sending from unregistered domains",
         meaning="client blocked from sending from unregistered domains",
         cause="the tenant sent mail from domains that are not its accepted domains, and "
         "mail_from's domain is one of them"),
    Code("5.7.700-749", R.SMTP_REJECTED,
         "the tenant is blocked from sending (threshold or IP not accepted): open a Microsoft "
         "support case", "550 5.7.708 Access denied, traffic not accepted from this IP",
         meaning="access denied: the tenant is blocked or its traffic is not accepted",
         cause="Microsoft blocked the tenant from sending: a threshold was exceeded, the IP is "
         "not accepted, or abuse is suspected"),
    Code("5.4.1", R.SMTP_REJECTED,
         "the recipient domain is not accepted here: rcpt_to must be in an accepted domain of this "
         "tenant (direct send: use the tenant's own MX host)", "550 5.4.1 Recipient address "
         "rejected: Access denied. AS(201806281) [Relay Access Denied]",
         meaning="recipient address rejected: access denied (relay access denied)",
         cause="the recipient is not in an accepted domain of the tenant this MX belongs to, or "
         "its directory does not know the address"),
    Code("5.5.105", R.SMTP_REJECTED, "High Volume Email accounts send to internal recipients only",
         "550 5.5.105 External sending is not supported for High Volume Email accounts",
         meaning="external sending is not supported for High Volume Email accounts",
         cause="High Volume Email delivers only to recipients in the tenant's own domains, and "
         "rcpt_to is outside them",
         docs=_HVE_DOCS),
    # --- Azure Communication Services (smtp.azurecomm.net) -----------------------------------
    Code("5.1.7", R.SMTP_REJECTED,
         "connect the verified email domain to the Communication Services resource (its Email > "
         "Domains > Connect domain) and send from a MailFrom address of that domain",
         "550 5.1.7 The specified sender domain has not been linked.",
         match="sender domain has not been linked",
         meaning="Azure Communication Services: the specified sender domain has not been linked",
         cause="mail_from's domain is not a verified domain connected to the Communication "
         "Services resource that the SMTP credentials belong to",
         docs=_ACS_DOMAIN_DOCS),
    # --- policy ---------------------------------------------------------------------------------
    Code("5.1.8", R.SMTP_REJECTED,
         "the account is blocked for sending spam: release it under Restricted entities in the "
         "Microsoft Defender portal", "550 5.1.8 Access denied, bad outbound sender",
         meaning="access denied, bad outbound sender",
         cause="the account is on the Restricted entities list after sending spam or exceeding "
         "outbound limits, often because it was compromised"),
    Code("5.7.501", R.SMTP_REJECTED, "banned sender (spam abuse): open a Microsoft support case",
         "550 5.7.501 Access denied, spam abuse detected",
         meaning="access denied, spam abuse detected",
         cause="Microsoft detected spam from this account or tenant"),
    Code("5.7.502", R.SMTP_REJECTED, "banned sender: open a Microsoft support case",
         "550 5.7.502 Access denied, banned sender",
         meaning="access denied, banned sender", cause="Microsoft banned this sender"),
    Code("5.7.503", R.SMTP_REJECTED, "banned sender: open a Microsoft support case",
         "550 5.7.503 Access denied, banned sender",
         meaning="access denied, banned sender", cause="Microsoft banned this sender"),
    Code("5.7.511", R.SMTP_REJECTED, "banned sender: request delisting via the delist portal",
         "550 5.7.511 Access denied, banned sender",
         meaning="access denied, banned sender",
         cause="the sender or its IP address is on Microsoft's block list"),
    Code("5.7.509", R.SMTP_REJECTED,
         "the sending domain fails DMARC: align SPF (include the relay) or DKIM-sign mail_from's "
         "domain", "550 5.7.509 Access denied, sending domain [contoso.com] does not pass DMARC "
         "verification and has a DMARC policy of reject",
         meaning="access denied: the sending domain does not pass DMARC and its policy is reject",
         cause="the From domain publishes p=reject and the message has neither an aligned SPF "
         "pass nor an aligned DKIM signature"),
    Code("5.7.515", R.SMTP_REJECTED,
         "authenticate mail_from's domain: an SPF record that lists the relay (Microsoft 365: "
         "include:spf.protection.outlook.com), DKIM signing for that domain (Microsoft 365: "
         "enable DKIM for it in the Defender portal) and a DMARC record (p=none or stronger) "
         "aligned with SPF or DKIM", "550 5.7.515 Access denied, sending domain [contoso.com] "
         "does not meet the required authentication level.",
         meaning="access denied: the sending domain does not meet the required authentication "
         "level (Outlook.com consumer mailboxes)",
         cause="since 5 May 2025 Outlook.com (outlook.com, hotmail.com, live.com) requires "
         "domains sending more than 5,000 messages a day to pass SPF and DKIM and to publish "
         "DMARC (at least p=none) aligned with SPF or DKIM; this domain fails one of them",
         docs=_OUTLOOK_COM_DOCS),
    Code("5.7.512", R.SMTP_REJECTED, "the message has no valid From header (RFC 5322 3.6.2)",
         "550 5.7.512 Access denied, message must be RFC 5322 section 3.6.2 compliant",
         meaning="access denied: the message must be RFC 5322 section 3.6.2 compliant",
         cause="the From header is missing or malformed"),
    Code("5.7.23", R.SMTP_REJECTED, "SPF fails at the destination: add the relay to the SPF record",
         "550 5.7.23 The message was rejected because of Sender Policy Framework violation",
         meaning="rejected because of a Sender Policy Framework (SPF) violation",
         cause="the relay's IP address is not in the SPF record of the envelope sender's domain "
         "and the destination enforces SPF"),
    Code("5.7.25", R.SMTP_REJECTED, "the IPv6 sender needs a PTR record",
         "550 5.7.25 The sending IPv6 address must have a reverse DNS record",
         meaning="the sending IPv6 address must have a reverse DNS record",
         cause="the mail came over IPv6 from an address without a PTR record"),
    Code("4.7.26", R.SMTP_TEMPORARY_FAILURE, "IPv6 mail must pass SPF or DKIM: sign or fix SPF",
         "450 4.7.26 Unauthenticated email sent over IPv6 is not accepted",
         meaning="unauthenticated email sent over IPv6 is not accepted",
         cause="the mail came over IPv6 and passed neither SPF nor DKIM"),
    Code("5.7.12", R.SMTP_REJECTED,
         "the recipient accepts only authenticated senders: send authenticated or "
         "Set-Mailbox -RequireSenderAuthenticationEnabled $false",
         "550 5.7.12 The sender was not authenticated by the organization",
         meaning="the sender was not authenticated by the organization",
         cause="the recipient accepts mail only from authenticated (internal) senders"),
    Code("5.7.133-136", R.SMTP_REJECTED,
         "the recipient group or mailbox accepts only internal senders: "
         "Set-DistributionGroup/Set-Mailbox -RequireSenderAuthenticationEnabled $false",
         "550 5.7.133 RESOLVER.RST.SenderNotAuthenticatedForGroup; authentication required",
         meaning="the recipient group or mailbox requires an authenticated sender",
         cause="RequireSenderAuthenticationEnabled is on for the recipient and the message "
         "arrived unauthenticated (from outside)"),
    Code("5.1.1", R.SMTP_REJECTED, "rcpt_to does not exist: check the address",
         "550 5.1.1 RESOLVER.ADR.RecipNotFound; not found",
         meaning="recipient not found", cause="rcpt_to does not exist in the recipient's directory"),
    Code("5.1.10", R.SMTP_REJECTED, "rcpt_to does not exist: check the address",
         "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup",
         meaning="recipient not found by SMTP address lookup",
         cause="rcpt_to does not exist in the recipient's directory"),
    Code("5.6.11", R.SMTP_REJECTED, "the message has bare line feeds: report this as a bug",
         "550 5.6.11 SMTPSEND.BareLinefeedsAreIllegal",
         meaning="bare line feeds are illegal",
         cause="the message contained a line feed without a carriage return"),
    Code("5.3.3", R.SMTP_PROTOCOL_ERROR,
         "the server refused a command (e.g. SMTPUTF8 after XOAUTH2): report this as a bug",
         "502 5.3.3 Command not implemented",
         meaning="command not implemented",
         cause="the client used a command or extension the server does not accept here"),
    Code("5.7.1", R.SMTP_REJECTED,
         "delivery not authorized (relay, transport rule or recipient restriction): the reply "
         "text says which", "550 5.7.1 Unable to relay",
         meaning="delivery not authorized (for example: unable to relay)",
         cause="a relay restriction, a transport rule or a recipient restriction refused the "
         "message"),
    Code("4.4.7", R.SMTP_TEMPORARY_FAILURE, "the message expired in a queue: check the next hop",
         "451 4.4.7 Message expired",
         meaning="message expired",
         cause="the message waited in a queue past its expiry, usually because the next hop "
         "could not be reached"),
    # --- connectors: Microsoft 365 delivering to the next hop (retried for 24 hours) ----------
    Code("4.4.312", R.SMTP_TEMPORARY_FAILURE,
         "fix the domain's DNS with its DNS host so the connector's smart host (or the MX) "
         "resolves; a partner's domain: ask the partner. Microsoft 365 retries for 24 hours",
         "450 4.4.312 DNS query failed",
         meaning="DNS query failed: Microsoft 365 could not look up the IP addresses of the "
         "connector's smart host",
         cause="a problem at the domain's DNS hosting, an expired domain, or a recently changed "
         "MX record that DNS servers still have cached",
         docs=_CONNECTOR_DOCS),
    Code("4.4.315", R.SMTP_TEMPORARY_FAILURE,
         "check that the destination server is up and reachable on TCP 25 from Microsoft 365, "
         "and the connector's smart host (Get-OutboundConnector | fl SmartHosts); a partner's "
         "server: ask the partner", "450 4.4.315 Connection timed out",
         meaning="connection timed out: Microsoft 365 could not connect to the destination "
         "email server",
         cause="the on-premises or partner server is down, or the connector's smart host "
         "points at a wrong IP address (e.g. after a change of internet provider)",
         docs=_CONNECTOR_DOCS),
    Code("4.4.316", R.SMTP_TEMPORARY_FAILURE,
         "allow Microsoft 365's IP ranges on TCP 25 to the destination servers; if no mail "
         "should go there any more, disable the outbound connector to them and make the "
         "accepted domain Authoritative (Set-AcceptedDomain -DomainType Authoritative)",
         "451 4.4.316 Connection refused [Message=Socket error code 10061]",
         meaning="connection refused: Microsoft 365 got a connection error from the "
         "destination email server",
         cause="a firewall blocks Microsoft 365's IP addresses, or the on-premises mail system "
         "was shut down after a migration while the connector still points at it",
         docs=_CONNECTOR_DOCS),
    Code("4.4.317", R.SMTP_TEMPORARY_FAILURE,
         "check TLS on the destination server (STARTTLS offered, a valid certificate) and the "
         "connector's TLS settings (Get-OutboundConnector | fl TlsSettings,TlsDomain); a "
         "partner's server: ask the partner", "450 4.4.317 Cannot connect to remote server",
         meaning="cannot connect to remote server: the destination answered with an error or "
         "does not meet the connection requirements",
         cause="the destination answered 'Service not available', or the connector requires "
         "TLS and the destination does not offer it",
         docs=_CONNECTOR_DOCS),
    Code("4.4.318", R.SMTP_TEMPORARY_FAILURE,
         "check the firewall's SMTP inspection rules in front of the destination server, the "
         "server's health and logs, and the network path; a partner's server: ask the partner",
         "450 4.4.318 Connection was closed abruptly",
         meaning="connection was closed abruptly: Microsoft 365 lost the connection to the "
         "destination email server",
         cause="a firewall's SMTP packet inspection misbehaves, the destination server hangs, "
         "crashes or runs low on resources, or the network in between drops the connection",
         docs=_CONNECTOR_DOCS),
    Code("4.7.320", R.SMTP_TEMPORARY_FAILURE,
         "renew or replace the destination server's certificate (its name must match what the "
         "connector expects) or correct the connector's TLS settings (Set-OutboundConnector "
         "-TlsSettings/-TlsDomain); a partner's server: ask the partner",
         "450 4.7.320 Certificate validation failed",
         meaning="certificate validation failed: Microsoft 365 could not validate the "
         "destination email server's certificate",
         cause="the destination's certificate expired, its subject does not match, or it is no "
         "longer valid",
         docs=_CONNECTOR_DOCS),
)  # fmt: skip

#: What a code with several variants (entries above) means as a whole, before its reply text
#: picks one; ``relayprobe explain 5.7.139`` prints it with every variant.
CODE_MEANINGS: dict[str, str] = {
    "5.7.139": "authentication unsuccessful: Microsoft 365 refused SMTP AUTH because of a "
    "policy; the reply text names which one",
    "5.2.252": "Send As denied, or the sender is throttled after repeated Send As denials",
    "5.2.0": "submission refused by the mailbox: Send As denied or a quota exceeded",
    "4.3.2": "Microsoft 365 throttling: too many concurrent connections or deliveries (other "
    "servers use 4.3.2 for any temporary error)",
}


def enhanced_code(text: str) -> str | None:
    """The RFC 3463 enhanced status code in a reply text (``5.7.139``), if any."""
    match = _ENHANCED.search(text)
    return match.group(0) if match else None


def entries_for(enhanced: str) -> tuple[Code, ...]:
    """Every table entry for an enhanced code (its variants, in table order), text unchecked."""
    return tuple(c for c in SMTP_CODES if c.covers_code(enhanced))


def lookup(code: int, text: str) -> Code | None:
    """The table entry for a reply, matched by enhanced code (and class), then text variant."""
    enhanced = enhanced_code(text)
    if enhanced is None or str(code)[:1] != enhanced[:1]:
        return None  # a 4xx reply carrying a 5.x.x code is not Microsoft's; do not guess
    lowered = text.lower()
    return next((c for c in SMTP_CODES if c.covers(enhanced, lowered)), None)


class EntraError(NamedTuple):
    """One Entra (AADSTS) error: what it says, the admin action, why it usually happens."""

    meaning: str
    remedy: str
    cause: str


#: Entra ID (AADSTS) errors from the token endpoint: code -> (meaning, remedy, cause).
AADSTS: dict[str, EntraError] = {
    "AADSTS7000215": EntraError(
        "invalid client secret",
        "the client secret is wrong: use the secret VALUE (not its ID) from App "
        "registrations > Certificates & secrets, or create a new one",
        "the client secret sent is not a valid secret of this app, often the secret's ID "
        "instead of its value"),
    "AADSTS7000222": EntraError(
        "client secret expired",
        "the client secret has expired: create a new one under Certificates & secrets and "
        "update client_secret_file",
        "the client secret is past its expiry date"),
    "AADSTS700016": EntraError(
        "unknown application",
        "client_id is not an app in this tenant: check client_id and tenant_id, or "
        "admin-consent the multi-tenant app in this tenant",
        "the app was not found in the tenant the request went to: a wrong client_id or "
        "tenant_id, or a multi-tenant app never added to this tenant"),
    "AADSTS90002": EntraError(
        "unknown tenant",
        "tenant_id does not exist: use the Directory (tenant) ID or a verified domain, and the "
        "right cloud (authority)",
        "the tenant name was not found: a wrong tenant_id, or a tenant of another cloud"),
    "AADSTS900023": EntraError(
        "malformed tenant",
        "tenant_id is malformed: use the Directory (tenant) ID",
        "the tenant identifier is neither a valid DNS name nor a tenant ID"),
    "AADSTS90014": EntraError(
        "missing field",
        "the token request lacked a required field: report this",
        "a field Entra expects is missing from the request or the credential"),
    "AADSTS65001": EntraError(
        "consent missing",
        "admin consent is missing: grant admin consent for SMTP.SendAsApp / IMAP.AccessAsApp "
        "(Office 365 Exchange Online) on API permissions",
        "the app's permissions were never consented to in this tenant"),
    "AADSTS7000112": EntraError(
        "application disabled",
        "the app or its service principal is disabled: enable it under Enterprise "
        "applications (Enabled for users to sign in)",
        "the application is disabled in this tenant"),
    "AADSTS700027": EntraError(
        "certificate not accepted",
        "the certificate is not registered on the app or thumbprint/private key do not match: "
        "upload the certificate under Certificates & secrets and set its SHA-1 thumbprint",
        "the client assertion failed signature validation: its certificate is not one of the "
        "app's, or key and thumbprint belong to different certificates"),
    "AADSTS700024": EntraError(
        "assertion time invalid",
        "the client assertion is outside its valid time: fix this host's clock (NTP)",
        "the client assertion is not within its valid time range, usually a wrong clock"),
    "AADSTS700023": EntraError(
        "assertion audience or scope refused",
        "the client assertion's audience must be this tenant's token endpoint and the scope "
        "https://outlook.office365.com/.default: check tenant_id, authority (cloud) and scope",
        "Microsoft lists AADSTS700023 both as an invalid scope for the token request and as a "
        "client assertion whose audience does not match the tenant's token endpoint"),
    "AADSTS7000218": EntraError(
        "credential missing",
        "no client secret or assertion was sent: set client_secret_file or certificate_file",
        "the token request contained neither client_assertion nor client_secret"),
    "AADSTS1002012": EntraError(
        "invalid scope",
        "scope must be https://outlook.office365.com/.default for app-only IMAP/SMTP",
        "an app-only (client credentials) request must ask for a resource's /.default scope"),
    "AADSTS70011": EntraError(
        "invalid scope",
        "scope must be https://outlook.office365.com/.default",
        "the scope requested by the app is invalid"),
    "AADSTS500011": EntraError(
        "resource not found",
        "the scope's resource is not in the tenant: use https://outlook.office365.com/.default "
        "and the right cloud",
        "the resource named by the scope was not found in the tenant"),
    "AADSTS53003": EntraError(
        "blocked by Conditional Access",
        "a Conditional Access policy blocks this app: exclude the service principal or allow "
        "this location",
        "a Conditional Access policy applied to this sign-in does not allow token issuance"),
    "AADSTS50020": EntraError(
        "account not in tenant",
        "the signed-in account does not belong to this tenant: sign in with an account of "
        "tenant_id, or check tenant_id",
        "the account is not a member or guest of the tenant the request went to"),
}  # fmt: skip


def aadsts_remedy(text: str) -> tuple[str, str] | None:
    """(AADSTS code, remedy) for the first known AADSTS code in ``text``."""
    for code in re.findall(r"AADSTS\d+", text):
        if code in AADSTS:
            return code, AADSTS[code].remedy
    return None
