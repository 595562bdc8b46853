"""Test support shared by the portal's tests and the connector packages' tests."""
