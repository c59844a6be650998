"""Hugging Face files in and out: safetensors, checkpoints, adapter directories, PEFT, SmolLM2."""
