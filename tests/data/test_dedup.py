import numpy as np
import pytest

from steel.data.clean import dedup as D

ARTICLE = (
    "国家统计局今天发布数据显示，今年前三季度国内生产总值同比增长百分之五点二，经济运行总体回升向好。"
    "其中第三季度增长百分之四点九，消费对经济增长的贡献率明显提高，就业形势总体稳定，居民收入继续增加。"
    "专家认为，随着各项政策效果持续显现，全年经济增长目标有望顺利实现。"
)
# The same article with a few characters changed (a typical near-duplicate from another site).
NEAR_COPY = ARTICLE.replace("今天", "昨日").replace("专家认为", "业内人士认为")
OTHER = (
    "机器学习是人工智能的一个分支，研究计算机怎样从数据中学习规律并做出预测。深度学习使用多层神经网络，"
    "在图像识别、语音识别和自然语言处理等任务上取得了突破性进展，也带来了对算力和数据的巨大需求。"
)
BOILERPLATE = "版权所有，未经授权禁止转载。本站所有文章均来自网络，如有侵权请联系删除。"


def test_exact_duplicates_keep_first_occurrence():
    hashes = [D.content_hash(t) for t in ("a", "b", "a", "c", "b")]
    assert D.find_exact_duplicates(hashes) == {2: 0, 4: 1}


def test_exact_hash_options():
    assert D.content_hash("Hello, World") != D.content_hash("hello world")
    assert D.content_hash("Hello, World", lowercase=True, ignore_non_character=True) == D.content_hash(
        "hello world", lowercase=True, ignore_non_character=True
    )


def test_simhash_character_shingles_find_near_copy():
    # A reposted copy: a dateline in front and an end mark appended.
    repost = "新华社北京电 " + ARTICLE + "（完）"
    fingerprints = [D.simhash(t, "character", 6) for t in (ARTICLE, OTHER, repost)]
    assert bin(fingerprints[0] ^ fingerprints[2]).count("1") <= 4
    assert D.find_simhash_duplicates(fingerprints) == {2: 0}


def test_simhash_whitespace_tokens_collapse_chinese():
    # Data-Juicer's whitespace tokens: each Chinese paragraph has fewer than 6 tokens, so no shingles,
    # the zero fingerprint, and every such document counts as a duplicate of the first one.
    fingerprints = [D.simhash(t, "space", 6) for t in (ARTICLE, OTHER, BOILERPLATE)]
    assert fingerprints == [0, 0, 0]
    assert D.find_simhash_duplicates(fingerprints) == {1: 0, 2: 0}


def test_simhash_block_search_matches_brute_force():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 2**63, size=40, dtype=np.uint64)
    values = list(base)
    for v in base[:20]:  # near copies with 1 to 6 flipped bits
        flips = rng.choice(64, size=int(rng.integers(1, 7)), replace=False)
        mask = np.uint64(sum(1 << int(b) for b in flips))
        values.append(v ^ mask)
    values = [int(v) for v in values]

    union = D._UnionFind(len(values))
    for i in range(len(values)):
        for j in range(i + 1, len(values)):
            if bin(values[i] ^ values[j]).count("1") <= 4:
                union.union(i, j)
    expected = D._clusters_to_duplicates(union, len(values))
    assert D.find_simhash_duplicates(values, num_blocks=6, hamming_distance=4) == expected
    assert expected  # the case has real near-duplicates


def test_simhash_rejects_impossible_block_setting():
    with pytest.raises(ValueError, match="hamming_distance"):
        D.find_simhash_duplicates([1, 2], num_blocks=4, hamming_distance=4)


def _minhash(texts, config):
    signatures = np.stack([D.minhash_signature(t, config) for t in texts])
    return D.find_minhash_duplicates(signatures, config, lambda i: D.shingle_set(texts[i], config))


def test_minhash_finds_near_copy_and_keeps_distinct_text():
    config = D.MinHashConfig(tokenization="character", window_size=5)
    duplicates, counts = _minhash([ARTICLE, OTHER, NEAR_COPY], config)
    assert duplicates == {2: 0}
    assert counts["candidate_pairs_confirmed"] == 1


def test_minhash_jieba_shingles():
    config = D.MinHashConfig(tokenization="jieba", window_size=3, jaccard_threshold=0.6)
    duplicates, _ = _minhash([ARTICLE, NEAR_COPY, OTHER], config)
    assert duplicates == {1: 0}


def test_minhash_shared_boilerplate_is_not_a_duplicate():
    a = "今天学校举行了秋季运动会，同学们积极参加各项比赛。" + BOILERPLATE
    b = "这家餐厅的红烧肉味道很好，价格也比较实惠，推荐。" + BOILERPLATE
    config = D.MinHashConfig()
    assert D.jaccard(D.shingle_set(a, config), D.shingle_set(b, config)) < 0.7
    assert _minhash([a, b], config)[0] == {}


def test_minhash_short_texts_are_confirmed_by_jaccard():
    # Short texts share LSH bands by chance far more often than long ones. Here every document is
    # forced into one bucket, so every pair is a candidate and the Jaccard check must reject the different ones.
    config = D.MinHashConfig(num_permutations=8, num_bands=1, num_rows_per_band=1, window_size=2)
    texts = ["你好世界", "你好中国", "你好世界"]
    signatures = np.stack([D.minhash_signature(t, config) for t in texts])
    signatures[:, 0] = 7  # every document lands in one bucket
    duplicates, counts = D.find_minhash_duplicates(signatures, config, lambda i: D.shingle_set(texts[i], config))
    assert duplicates == {2: 0}
    assert counts["candidate_pairs_rejected"] >= 1


def test_minhash_band_choice():
    bands, rows = D.MinHashConfig(num_permutations=256, jaccard_threshold=0.7).bands()
    assert bands * rows <= 256
    assert 0.55 < (1 / bands) ** (1 / rows) < 0.7
    assert D.MinHashConfig(num_bands=4, num_rows_per_band=2).bands() == (4, 2)


def test_shingle_units():
    assert D.tokens_for_shingles("Hello, 世界!", "character", ignore_pattern=r"\p{P}") == list("hello世界")
    assert D.tokens_for_shingles("A b  C", "space") == ["a", "b", "c"]
    assert D.shingles(["a", "b", "c"], 2) == ["a b", "b c"]
    with pytest.raises(ValueError, match="unknown tokenization"):
        D.tokens_for_shingles("x", "bytes")
