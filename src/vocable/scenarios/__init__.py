"""Scenario tests: ``vocable test SCENARIOS.yaml [--junit OUT.xml]`` (docs/testing.md).

A scenario is a list of user steps (typed text, a WAV file, text spoken by an offline TTS, DTMF keys; with
``after_ms``, spoken over the agent) and what to expect of each turn (words heard and replied, tools called,
interruption, latency budgets, an LLM judge's verdict). ``model`` reads the file, ``runner`` runs each
scenario in a session of its own in real time, ``report`` prints pytest-style and writes JUnit XML.
"""
