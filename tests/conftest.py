"""Test-suite wiring: the real mail system fixtures (tests/testbed) for every test module, and the
posture tests' own DNS server and MTA-STS policy server (tests/posture)."""

pytest_plugins = ["tests.testbed.fixture", "tests.posture.fixture"]
