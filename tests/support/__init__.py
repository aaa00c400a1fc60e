"""Helpers the tests share: daemons, terminals, cards, worlds, databases, oracles.

No test module imports another test module (tests/test_layers.py holds the suite to it); what
two tests need lives here, and nothing here imports a test module."""
