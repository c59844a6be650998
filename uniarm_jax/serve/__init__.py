"""`uniarm serve`: guided decoding as an OpenAI-compatible service, one preference vector per request.

slots (the compiled decode step over fixed rows), scheduler (the device loop's thread, continuous
batching, the bounded queue), service (the served models, requests into jobs), requests (what a request
may ask, checked), text (tokens into streamed text, stop strings), api (FastAPI routes, OpenAI's formats
and errors), static/ (the playground page). docs/design.md §5 says how the slots map onto the step.
"""
