"""``data.dataset = "hf"``: a Hugging Face dataset (placeholder while it is written)."""
