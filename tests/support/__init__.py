"""Test helpers: real processes and servers on loopback, no mocks of our code."""
