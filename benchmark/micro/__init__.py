"""The embedded `micro` suite: a synthetic world, a tokenizer and a small Llama built offline."""
