"""IMAP: the mailbox session, the folder watcher and the per-mailbox watch of probe tags."""
