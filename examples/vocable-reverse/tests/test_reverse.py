"""The plugin's own tests: vocable's contract kit run against ReverseLLM."""

from vocable.testing.contract import LLMContract
from vocable_reverse import ReverseLLM


class TestReverseContract(LLMContract):
    def make_provider(self):
        return ReverseLLM(ReverseLLM.Settings(word_delay_ms=50))
