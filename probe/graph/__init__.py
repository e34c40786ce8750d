"""Microsoft Graph: the mailbox watched over Graph instead of IMAP, and message trace."""
