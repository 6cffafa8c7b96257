"""Interoperability with the Hugging Face ecosystem: export to and import from `transformers` checkpoints
(BERT and GPT-NeoX layouts, tokenizer.json). `transformers` itself is never imported here: the files are
written and read with `safetensors` and `tokenizers`, so training does not need torch."""
