# Junk placement like Exchange Online Protection (runs before any user script).
require ["fileinto", "envelope", "subaddress", "mailbox"];
if anyof (
    header :is "X-Spam-Flag" "YES",
    exists "X-Testbed-Junk",
    envelope :detail "to" "junk",
    header :matches "Authentication-Results" "mx.probe.test;*dmarc=fail (p=quarantine*",
    header :matches "Authentication-Results" "mx.probe.test;*dmarc=fail (p=reject*"
) {
    fileinto :create "Junk Email";
    stop;
}
