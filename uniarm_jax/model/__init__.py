"""The model: the Flax Llama, its config, the adapters injected into it, sharding, and the handle."""
