"""The data pipeline: sources to JSONL, cleaning, token shards and the pretraining stream.

Kept free of heavy imports; import the submodules (`steel.data.tokenize`, `steel.data.stream`,
`steel.data.manifest`) for their functions.
"""
