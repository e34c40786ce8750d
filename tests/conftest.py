"""Test-suite wiring: the real mail system fixtures (tests/testbed) for every test module."""

pytest_plugins = ["tests.testbed.fixture"]
