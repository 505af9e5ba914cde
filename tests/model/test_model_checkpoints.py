import filecmp
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import steel.model
from steel.model import SteelForCausalLM, load
from steel.cli import main as steel_main
from steel.model.convert import export_pretrained, to_qwen2
from steel_model_testing import VARIANTS, random_ids, tiny_model  # noqa: F401

REPO_ROOT = Path(__file__).resolve().parents[2]
MODELING_FILE = REPO_ROOT / "steel" / "model" / "modeling_steel.py"

# Runs in a fresh interpreter where `import steel` fails, so only the copied modeling file can serve.
BLOCKED_STEEL_LOADER = textwrap.dedent(
    """
    import importlib.abc, json, sys
    class BlockSteel(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name == "steel" or name.startswith("steel."):
                raise ImportError("steel is blocked in this test")
    sys.meta_path.insert(0, BlockSteel())
    import torch
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
    ids = torch.tensor(json.loads(sys.argv[2]))
    with torch.no_grad():
        logits = model(ids).logits
    generated = model.generate(ids, max_new_tokens=3, do_sample=False, pad_token_id=0)
    print(json.dumps({"class": type(model).__module__, "logits": logits[0, -1, :5].tolist(),
                      "generated": generated.tolist()}))
    """
)


def reference_dir(shared_dir: Path) -> Path:
    directory = shared_dir / "conformance" / "steel-reference-A"
    if not directory.is_dir():
        pytest.skip("conformance/steel-reference-A is not in the reference data")
    return directory


def write_released_layout(model: SteelForCausalLM, directory: Path, **config_changes) -> Path:
    """Save a soft_moe model the way the released Steel-LLM checkpoints look (model_type qwen2)."""
    model.save_pretrained(directory)
    (directory / "modeling_steel.py").unlink()
    config = json.loads((directory / "config.json").read_text())
    for key in ("ffn_type", "expert_type", "auto_map", "soft_moe_cached_decoding"):
        config.pop(key)
    config.update(model_type="qwen2", FFN_type="softmoe_v3", mlp_type="senet", sliding_window=32768)
    config.update(config_changes)
    (directory / "config.json").write_text(json.dumps(config))
    return directory


def test_reference_logits_match(shared_dir):
    directory = reference_dir(shared_dir)
    model = SteelForCausalLM.from_pretrained(directory / "model", dtype=torch.float32).eval()
    io = load_file(directory / "io.safetensors")

    with torch.no_grad():
        logits = model(io["input_ids"]).logits

    assert model.config.ffn_type == "soft_moe"
    torch.testing.assert_close(logits, io["logits"], atol=1e-4, rtol=0)


def test_reference_is_not_causal(shared_dir):
    directory = reference_dir(shared_dir)
    model = load(directory / "model")
    io = load_file(directory / "io.safetensors")
    checks = load_file(directory / "checks.safetensors")

    with torch.no_grad():
        changed = model(checks["input_ids_last_changed"]).logits

    torch.testing.assert_close(changed, checks["logits_last_changed"], atol=1e-4, rtol=0)
    # Only the last token differs, yet position 0 moves: the released Soft MoE sees future tokens.
    assert (changed[:, 0] - io["logits"][:, 0]).abs().max() > 0.05


def test_reference_cached_decoding_opt_in(shared_dir):
    directory = reference_dir(shared_dir)
    model = load(directory / "model")
    model.config.soft_moe_cached_decoding = True
    ids = load_file(directory / "io.safetensors")["input_ids"]
    checks = load_file(directory / "checks.safetensors")

    with torch.no_grad():
        prefill = model(ids[:, :23], use_cache=True)
        step = model(ids[:, 23:], past_key_values=prefill.past_key_values, use_cache=True)
        full = model(ids).logits

    torch.testing.assert_close(prefill.logits, checks["prefill23_logits"], atol=1e-4, rtol=0)
    torch.testing.assert_close(step.logits, checks["kv_step24_logits"], atol=1e-4, rtol=0)
    assert (step.logits[:, 0] - full[:, -1]).abs().max() > 1.0


def test_released_layout_loads(tmp_path, random_ids):
    model = tiny_model("soft_moe")
    released = write_released_layout(model, tmp_path / "released")

    assert steel.model.is_released_format(released)
    with torch.no_grad():
        expected = model(random_ids).logits
        for loaded in (load(released), SteelForCausalLM.from_pretrained(released)):
            assert loaded.config.ffn_type == "soft_moe"
            torch.testing.assert_close(loaded(random_ids).logits, expected)


@pytest.mark.parametrize(("key", "value"), [("FFN_type", "softmoe_v2"), ("mlp_type", "mlp")])
def test_released_layout_rejects_other_types(tmp_path, key, value):
    released = write_released_layout(tiny_model("soft_moe"), tmp_path / "released", **{key: value})
    with pytest.raises(ValueError, match=f"{key} '{value}'"):
        load(released)


def test_qwen2_mapping_stays_untouched():
    from transformers import AutoConfig, Qwen2Config

    assert type(AutoConfig.for_model("qwen2")) is Qwen2Config


@pytest.mark.parametrize("ffn_type", VARIANTS)
def test_save_load_round_trip(tmp_path, ffn_type, random_ids):
    from transformers import AutoModelForCausalLM

    model = tiny_model(ffn_type)
    model.save_pretrained(tmp_path / "model")

    with torch.no_grad():
        expected = model(random_ids).logits
        for loaded in (load(tmp_path / "model"), AutoModelForCausalLM.from_pretrained(tmp_path / "model")):
            assert isinstance(loaded, SteelForCausalLM)
            assert loaded.config.ffn_type == ffn_type
            torch.testing.assert_close(loaded(random_ids).logits, expected, atol=0, rtol=0)


def test_saved_modeling_file_is_the_source(tmp_path):
    tiny_model("soft_moe_causal").save_pretrained(tmp_path)
    assert filecmp.cmp(tmp_path / "modeling_steel.py", MODELING_FILE, shallow=False)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_steel.SteelForCausalLM"


def test_modeling_file_imports_only_torch_and_transformers():
    imports = [line.split()[1] for line in MODELING_FILE.read_text().splitlines() if line.startswith(("import ", "from "))]
    roots = {name.split(".")[0] for name in imports}
    assert roots <= {"torch", "transformers", "logging", "math", "collections"}


def run_without_steel(directory: Path, ids: torch.Tensor) -> dict:
    env = {**os.environ, "PYTHONPATH": "", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", BLOCKED_STEEL_LOADER, str(directory), json.dumps(ids.tolist())],
        capture_output=True,
        text=True,
        cwd=directory,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_trust_remote_code_without_steel(tmp_path, random_ids):
    model = tiny_model("soft_moe_causal")
    model.save_pretrained(tmp_path / "model")
    ids = random_ids[:1]

    output = run_without_steel(tmp_path / "model", ids)

    assert not output["class"].startswith("steel")
    with torch.no_grad():
        expected = model(ids).logits[0, -1, :5]
    torch.testing.assert_close(torch.tensor(output["logits"]), expected, atol=1e-5, rtol=0)
    assert output["generated"] == model.generate(ids, max_new_tokens=3, do_sample=False, pad_token_id=0).tolist()


def test_convert_cli_then_auto_model(tmp_path, random_ids):
    from transformers import AutoModelForCausalLM

    model = tiny_model("soft_moe")
    released = write_released_layout(model, tmp_path / "released")
    (released / "tokenizer_config.json").write_text("{}")
    out = tmp_path / "converted"

    assert steel_main(["model", "convert", str(released), str(out)]) == 0

    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "steel"
    assert config["ffn_type"] == "soft_moe"
    assert (out / "tokenizer_config.json").is_file()
    assert filecmp.cmp(out / "modeling_steel.py", MODELING_FILE, shallow=False)
    with torch.no_grad():
        converted = AutoModelForCausalLM.from_pretrained(out)
        torch.testing.assert_close(converted(random_ids).logits, model(random_ids).logits)


def test_convert_cli_rejects_steel_directory(tmp_path):
    tiny_model("soft_moe").save_pretrained(tmp_path / "steel-dir")
    with pytest.raises(SystemExit, match="not in the released Steel-LLM layout"):
        steel_main(["model", "convert", str(tmp_path / "steel-dir"), str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_dense_equals_qwen2(random_ids):
    model = tiny_model("dense")
    qwen2 = to_qwen2(model)
    attention_mask = torch.ones_like(random_ids)
    attention_mask[0, :3] = 0

    with torch.no_grad():
        torch.testing.assert_close(qwen2(random_ids).logits, model(random_ids).logits, atol=1e-5, rtol=0)
        steel_padded = model(random_ids, attention_mask=attention_mask).logits
        position_ids = (attention_mask.cumsum(-1) - 1).clamp_min(0)
        qwen2_padded = qwen2(random_ids, attention_mask=attention_mask, position_ids=position_ids).logits
    torch.testing.assert_close(qwen2_padded[0, 3:], steel_padded[0, 3:], atol=1e-5, rtol=0)


def test_dense_exports_native_qwen2(tmp_path, random_ids):
    from transformers import AutoModelForCausalLM, Qwen2ForCausalLM

    model = tiny_model("dense")
    export_pretrained(model, tmp_path / "qwen2")

    config = json.loads((tmp_path / "qwen2" / "config.json").read_text())
    assert config["model_type"] == "qwen2"
    assert "auto_map" not in config
    assert not (tmp_path / "qwen2" / "modeling_steel.py").exists()
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "qwen2")
    assert type(loaded) is Qwen2ForCausalLM
    with torch.no_grad():
        torch.testing.assert_close(loaded(random_ids).logits, model(random_ids).logits, atol=1e-5, rtol=0)


def test_export_refuses_non_empty_directory(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not empty"):
        export_pretrained(tiny_model("soft_moe_causal"), tmp_path / "out")
    assert (tmp_path / "out" / "keep.txt").read_text() == "x"
