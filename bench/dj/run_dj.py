"""Run py-data-juicer 1.6.1 on a JSONL directory and print the elapsed seconds as JSON.

Started by bench/bench_clean.py with bench/.dj-venv/bin/python; never imported by Steel.
Usage: run_dj.py CONFIG.yaml
"""

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from data_juicer.utils import model_utils  # noqa: E402

from jieba_words import prepare_jieba_model  # noqa: E402

model_utils.MODEL_FUNCTION_MAPPING["sentencepiece"] = prepare_jieba_model


def main() -> None:
    from data_juicer.config import init_configs
    from data_juicer.core import DefaultExecutor

    config = init_configs(["--config", sys.argv[1]])
    start = time.perf_counter()
    DefaultExecutor(config).run()
    elapsed = time.perf_counter() - start
    print(json.dumps({"seconds": elapsed}))


if __name__ == "__main__":
    main()
