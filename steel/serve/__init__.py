"""Serving: generation with a KV cache, the terminal chat, the OpenAI-compatible server and the web chat page.

`engine.Engine` generates batches of requests; `engine.GenerationWorker` feeds it from a queue for
the server and, with continuous batching, admits waiting requests into the running batch
(`batching` merges their KV caches). `cli` contains the `steel generate`, `steel chat` and
`steel serve` commands.
"""
