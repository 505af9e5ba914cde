from steel.serve.decoding import REPLACEMENT_CHARACTER, IncrementalDecoder, StopStringFilter

TEXT = "你好，世界！Steel 钢铁是这样炼成的。"


def test_chinese_characters_span_several_tokens(loaded):
    # The premise of the streaming tests: the tiny tokenizer splits characters into byte tokens.
    tokenizer = loaded.tokenizer
    pieces = [tokenizer.decode([token_id]) for token_id in tokenizer.encode(TEXT)]
    assert any(REPLACEMENT_CHARACTER in piece for piece in pieces)


def test_incremental_decoder_emits_whole_characters(loaded):
    tokenizer = loaded.tokenizer
    decoder = IncrementalDecoder(tokenizer)
    deltas = [decoder.add(token_id) for token_id in tokenizer.encode(TEXT)]
    deltas.append(decoder.flush())
    assert all(REPLACEMENT_CHARACTER not in delta for delta in deltas)
    assert "".join(deltas) == TEXT


def test_incremental_decoder_flushes_incomplete_character(loaded):
    tokenizer = loaded.tokenizer
    ids = tokenizer.encode("炼")
    assert len(ids) > 1
    decoder = IncrementalDecoder(tokenizer)
    assert decoder.add(ids[0]) == ""
    assert decoder.flush() == tokenizer.decode(ids[:1])


def test_stop_string_split_across_deltas():
    stop_filter = StopStringFilter(["<END>"])
    emitted = []
    stopped = False
    for delta in ["Hello <E", "N", "D> ignored"]:
        text, stopped = stop_filter.push(delta)
        emitted.append(text)
        if stopped:
            break
    assert stopped
    assert "".join(emitted) == "Hello "


def test_stop_filter_releases_false_alarm():
    stop_filter = StopStringFilter(["ab"])
    first, _ = stop_filter.push("xa")
    second, stopped = stop_filter.push("c")
    assert first == "x"
    assert second == "ac"
    assert not stopped
    assert stop_filter.flush() == ""


def test_earliest_stop_string_wins():
    stop_filter = StopStringFilter(["world", "lo"])
    text, stopped = stop_filter.push("hello world")
    assert stopped
    assert text == "hel"
