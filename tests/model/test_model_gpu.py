"""GPU checks of the model: bf16 on CUDA with sdpa, and flash attention when it is installed."""

import importlib.util

import pytest
import torch

from steel_model_testing import VARIANTS, random_ids, tiny_model  # noqa: F401

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

BF16_ATOL = 5e-2


@pytest.mark.parametrize("ffn_type", VARIANTS)
def test_cuda_bf16_matches_cpu_fp32(ffn_type, random_ids):
    model = tiny_model(ffn_type)
    with torch.no_grad():
        expected = model(random_ids).logits
        cuda_model = model.to("cuda", torch.bfloat16)
        logits = cuda_model(random_ids.cuda()).logits.float().cpu()
    torch.testing.assert_close(logits, expected, atol=BF16_ATOL, rtol=0)


@pytest.mark.parametrize("ffn_type", ["soft_moe_causal", "dense"])
def test_cuda_cache_matches_full_forward(ffn_type, random_ids):
    model = tiny_model(ffn_type).to("cuda")
    ids = random_ids.cuda()
    with torch.no_grad():
        full = model(ids).logits
        cache = model(ids[:, :6], use_cache=True).past_key_values
        steps = [model(ids[:, t : t + 1], past_key_values=cache, use_cache=True).logits for t in range(6, 12)]
    torch.testing.assert_close(torch.cat(steps, 1), full[:, 6:], atol=1e-4, rtol=0)


@pytest.mark.skipif(importlib.util.find_spec("flash_attn") is None, reason="flash-attn is not installed")
@pytest.mark.parametrize("ffn_type", VARIANTS)
def test_flash_attention_packed_segments(ffn_type, random_ids):
    model = tiny_model(ffn_type, attn_implementation="flash_attention_2").to("cuda", torch.bfloat16)
    first, second = random_ids[0, :7].cuda(), random_ids[1, :5].cuda()
    segment_ids = torch.tensor([[0] * 7 + [1] * 5], device="cuda")
    with torch.no_grad():
        packed = model(torch.cat([first, second])[None], segment_ids=segment_ids).logits.float()
        alone = model(second[None]).logits.float()
    torch.testing.assert_close(packed[:, 7:], alone, atol=BF16_ATOL, rtol=0)
