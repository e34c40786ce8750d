"""System tests: the real mail system, OAuth stand-in, monitoring cores, Prometheus tooling, helm and a browser."""
