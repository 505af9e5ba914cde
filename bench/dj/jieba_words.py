"""Jieba in place of Data-Juicer's SentencePiece word models, for the benchmark only.

Data-Juicer's word operators with `tokenization: true` load a SentencePiece model per language from
the network. The benchmark gives them jieba instead, so both sides segment Chinese the same way.
"""

import jieba


class JiebaWords:
    def encode_as_pieces(self, text: str) -> list[str]:
        return jieba.lcut(text)


def prepare_jieba_model(lang: str = "zh", device: str = "cpu", **kwargs) -> JiebaWords:
    jieba.setLogLevel(60)
    jieba.initialize()
    return JiebaWords()
