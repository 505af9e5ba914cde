"""Shipped recipes resolve from the source tree and from a built, non-editable wheel.

NOTE: no test makes a second editable install, because `pip install --prefix DIR -e .` first
uninstalls the steel already installed in the running venv. `test_recipes_dir_is_repository_folder`
covers the venv's own editable install.
"""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest

from steel.data.clean.recipe import resolve_recipe_path
from steel.resources import ResourceError, recipe_path, recipes_dir

REPO_ROOT = Path(__file__).resolve().parents[2]
SHIPPED_DATA_RECIPES = ("steel-code", "steel-text", "zh-web")


def test_recipe_path_finds_shipped_files():
    assert recipe_path("data/zh-web.yaml").read_text(encoding="utf-8").startswith("#")
    assert recipe_path("demo/pretrain.yaml").is_file()
    assert recipe_path("demo/sft.yaml").is_file()
    assert recipe_path("post-training-data/sft-tiny-zh.jsonl").is_file()


def test_recipes_dir_is_repository_folder():
    # An editable install and a plain checkout both read the files under version control.
    assert recipes_dir().resolve() == (REPO_ROOT / "recipes").resolve()


def test_recipe_path_missing_names_file():
    with pytest.raises(ResourceError, match="no-such-recipe.yaml"):
        recipe_path("data/no-such-recipe.yaml")


def test_shipped_recipe_names_resolve():
    for name in SHIPPED_DATA_RECIPES:
        assert resolve_recipe_path(name) == recipe_path(f"data/{name}.yaml")


def test_unknown_recipe_lists_shipped_names():
    with pytest.raises(SystemExit, match="steel-code, steel-text, zh-web"):
        resolve_recipe_path("no-such-recipe")


def test_pyproject_lists_every_package():
    # pyproject.toml lists packages by hand because recipes/ is mapped into steel; a package
    # directory missing from that list would be left out of the wheel.
    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    listed = set(config["tool"]["setuptools"]["packages"])
    on_disk = set()
    for directory in [REPO_ROOT / "steel", *(REPO_ROOT / "steel").rglob("*")]:
        if not directory.is_dir() or directory.name == "__pycache__":
            continue
        if any(child.is_file() and child.suffix != ".pyc" for child in directory.iterdir()):
            on_disk.add(".".join(directory.relative_to(REPO_ROOT).parts))

    assert on_disk - listed == set()
    assert config["tool"]["setuptools"]["package-dir"] == {"steel.recipes": "recipes"}


WHEEL_CHECK = """
import json, sys
import steel
from steel.data.clean.recipe import resolve_recipe_path
from steel.resources import recipe_path
print(json.dumps({
    "steel": steel.__file__,
    "recipes": {name: str(resolve_recipe_path(name)) for name in sys.argv[1:]},
    "demo": str(recipe_path("demo/pretrain.yaml")),
    "path": sys.path,
}))
"""


PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", "-q"]


def _pip(*args):
    result = subprocess.run([*PIP, *args], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.fixture(scope="module")
def source_copy(tmp_path_factory):
    """The files a build reads, copied: setuptools writes build/ and *.egg-info/ beside them."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO_ROOT / name, source / name)
    for name in ("steel", "recipes"):
        shutil.copytree(REPO_ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    return source


@pytest.fixture(scope="module")
def wheel_site(source_copy, tmp_path_factory):
    """Build the wheel and install it with `--target`, without the source tree."""
    root = tmp_path_factory.mktemp("wheel")
    _pip("wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", str(root / "dist"), str(source_copy))
    wheels = list((root / "dist").glob("steel-*.whl"))
    assert len(wheels) == 1

    site = root / "site"
    _pip("install", "--no-deps", "--no-index", "--target", str(site), str(wheels[0]))
    return site


def _run_installed(site, args, cwd):
    # -S skips site-packages and its .pth files, so the checkout's editable install never loads.
    # The venv's site-packages still provides the dependencies through PYTHONPATH.
    dependencies = sysconfig.get_paths()["purelib"]
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env["PYTHONPATH"] = os.pathsep.join([str(site), dependencies])
    return subprocess.run([sys.executable, "-S", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_wheel_resolves_shipped_recipes(wheel_site, tmp_path):
    result = _run_installed(wheel_site, ["-c", WHEEL_CHECK, *SHIPPED_DATA_RECIPES], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)

    assert Path(report["steel"]).is_relative_to(wheel_site)
    assert not any(Path(entry).resolve() == REPO_ROOT for entry in report["path"] if entry)
    for name in SHIPPED_DATA_RECIPES:
        assert Path(report["recipes"][name]) == wheel_site / "steel" / "recipes" / "data" / f"{name}.yaml"
    assert Path(report["demo"]) == wheel_site / "steel" / "recipes" / "demo" / "pretrain.yaml"


def test_wheel_cleans_with_zh_web(wheel_site, tmp_path):
    paragraph = "北京是中华人民共和国的首都，也是全国的政治中心和文化中心，有三千多年的建城史。"
    records = [{"text": paragraph * 2, "id": "zh-1"}, {"text": "短", "id": "zh-2"}]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")

    output = tmp_path / "out"
    args = ["-m", "steel", "data", "clean", "--recipe", "zh-web", str(corpus), "--output", str(output), "--workers", "1"]
    result = _run_installed(wheel_site, args, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]

    stats = json.loads((output / "stats.json").read_text(encoding="utf-8"))
    assert stats["recipe"] == "zh-web"
    assert stats["totals"]["documents_in"] == 2
    assert stats["totals"]["documents_out"] == 1

