"""The receiver's verdict: Authentication-Results, the header block, and its judgement."""
