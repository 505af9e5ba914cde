"""Step 2 of the data pipeline: cleaning operators, recipes, deduplication and their statistics."""
