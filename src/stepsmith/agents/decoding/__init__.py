"""Constrained decoding: the well-typed STeP statements a model may write next, the task's
context-free grammar for servers, and the local decoder that enforces them."""
