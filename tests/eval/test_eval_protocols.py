import pytest

from steel.eval.protocols import PROTOCOLS, get_protocol

# The settings each protocol version stands for. A change to a protocol must raise its version
# and update this table in the same commit.
PINNED = {
    ("strict", 1): dict(mode="logits", shots=5, system_prompt=None, max_new_tokens=32, fuzzy_match=False,
                        splits={"ceval": "val", "cmmlu": "test", "mmlu": "test"}),
    ("steel-llm-report", 1): dict(mode="generate", shots=0, system_prompt="You are a helpful assistant.",
                                  max_new_tokens=512, fuzzy_match=True,
                                  splits={"ceval": "val", "cmmlu": "test", "mmlu": "test"}),
}


@pytest.mark.parametrize("name", sorted(PROTOCOLS))
def test_protocol_settings_are_pinned(name):
    protocol = get_protocol(name)
    pinned = PINNED[name, protocol.version]
    for key, value in pinned.items():
        assert getattr(protocol, key) == value, key
    assert protocol.prompt_formats == {"ceval": "ceval", "cmmlu": "cmmlu", "mmlu": "mmlu"}


def test_record_lists_overrides():
    base = get_protocol("strict")
    changed = base.with_overrides(shots=0, mode=None)
    record = changed.record(base)
    assert record["id"] == "strict/v1"
    assert record["shots"] == 0
    assert record["overrides"] == {"shots": 0}
    assert base.record(base)["overrides"] == {}


def test_unknown_protocol_is_rejected():
    with pytest.raises(ValueError, match="unknown protocol 'lenient'"):
        get_protocol("lenient")
