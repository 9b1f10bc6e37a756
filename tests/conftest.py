"""Shared test set-up. Helpers live in vocable.testing.scripted so every test folder can import them."""
