"""Steel: build a Chinese-centric LLM from scratch on limited compute."""

__version__ = "0.1.0"
