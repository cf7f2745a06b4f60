"""stepsmith: LLM agents that write STeP operators and improve from their own verified successes."""

__version__ = "0.1.0"
