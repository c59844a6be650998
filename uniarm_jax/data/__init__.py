"""Preference data: files in three schemas, templates, tokenisation, batches; prompt files."""
