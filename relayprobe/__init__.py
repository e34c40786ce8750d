"""The relayprobe application: the command line, each subcommand, the demo and its embedded mail system."""
