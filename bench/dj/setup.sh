#!/usr/bin/env bash
# Build the isolated Data-Juicer environment that bench/bench_clean.py compares against.
#
# py-data-juicer installs operator dependencies itself at run time and may try to replace torch,
# so it lives in its own virtualenv (bench/.dj-venv), never in the project's .venv and never in
# CI. CPU torch 2.13.0 and the operators' dependencies go in first; UV_OFFLINE=1 stops the run-time
# installer from reaching for anything else.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.dj-venv
PYTHON=${PYTHON:-python3}

test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
# The CPU wheel first: an unpinned torch requirement would pull a multi-GB CUDA build.
"$VENV/bin/python" -m pip install --quiet torch==2.13.0
# Dependencies of the text operators the benchmark runs (Chinese conversion, HTML, Unicode repair,
# jieba words, SimHash), installed before Data-Juicer so that it finds them and installs nothing.
"$VENV/bin/python" -m pip install --quiet jieba==0.42.1 ftfy==6.3.1 selectolax==1.0.2 simhash-pybind==0.0.3 opencc==1.4.2 aiohttp==3.14.5
"$VENV/bin/python" -m pip install --quiet py-data-juicer==1.6.1
echo "Data-Juicer environment ready: $VENV"
"$VENV/bin/python" -c "import data_juicer; print('data_juicer', data_juicer.__version__)"
