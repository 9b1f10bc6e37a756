"""Tests of the offline providers (a package, so its conftest does not shadow the root one)."""
