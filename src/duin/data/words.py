"""The 61-word vocabulary of the Du-IN word-reading task, and its syllable structure.

The label index of a word is its position in the code-point-sorted list of the 61 Chinese word
strings (duin-reference Appendix A): this is what the reference code assigns when all 61 words
are present, so ``WORDS[i]`` is the word of label ``i``.

Each word is one or two Mandarin syllables. :func:`syllables` gives their pinyin split into
initial, final and tone (1-4, 5 = neutral), so that tools such as the simulator can build words
from shared parts (e.g. 心情 xin1 qing2 and 钢琴 gang1 qin2 share the final ``in``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "GLOSSES",
    "N_WORDS",
    "WORDS",
    "Syllable",
    "check_labels",
    "gloss",
    "syllables",
    "word_index",
]

# word -> (English gloss, space-separated numbered pinyin; tone 5 = neutral)
_TABLE: dict[str, tuple[str, str]] = {
    "丝瓜": ("loofah", "si1 gua1"),
    "你": ("you", "ni3"),
    "关门": ("close the door", "guan1 men2"),
    "凳子": ("stool", "deng4 zi5"),
    "厕所": ("toilet", "ce4 suo3"),
    "口渴": ("thirsty", "kou3 ke3"),
    "吃": ("eat", "chi1"),
    "喝": ("drink", "he1"),
    "嘴巴": ("mouth", "zui3 ba5"),
    "外卖": ("takeouts", "wai4 mai4"),
    "头疼": ("headache", "tou2 teng2"),
    "家人": ("family", "jia1 ren2"),
    "小刀": ("knife", "xiao3 dao1"),
    "帮助": ("help", "bang1 zhu4"),
    "平静": ("calm", "ping2 jing4"),
    "心情": ("mood", "xin1 qing2"),
    "怎样": ("how", "zen3 yang4"),
    "感觉": ("feel", "gan3 jue2"),
    "愿意": ("willing", "yuan4 yi4"),
    "我": ("I", "wo3"),
    "手机": ("cell phone", "shou3 ji1"),
    "找": ("look for", "zhao3"),
    "把": ("get", "ba3"),
    "护士": ("nurse", "hu4 shi5"),
    "拿": ("hold", "na2"),
    "换药": ("change dressing", "huan4 yao4"),
    "放在": ("put on", "fang4 zai4"),
    "是": ("be", "shi4"),
    "有": ("have", "you3"),
    "朋友": ("friend", "peng2 you5"),
    "橙汁": ("orange juice", "cheng2 zhi1"),
    "毛巾": ("towel", "mao2 jin1"),
    "汤圆": ("sweet dumpling", "tang1 yuan2"),
    "漂亮": ("pretty", "piao4 liang5"),
    "热水": ("hot water", "re4 shui3"),
    "猪肉": ("pork", "zhu1 rou4"),
    "玩": ("play", "wan2"),
    "电脑": ("computer", "dian4 nao3"),
    "看": ("look", "kan4"),
    "碗": ("bowl", "wan3"),
    "穿": ("wear", "chuan1"),
    "篮球": ("basketball", "lan2 qiu2"),
    "米饭": ("rice", "mi3 fan4"),
    "给": ("give", "gei3"),
    "脸盆": ("washbasin", "lian3 pen2"),
    "菠萝": ("pineapple", "bo1 luo2"),
    "葱花": ("chopped green onion", "cong1 hua1"),
    "蒜泥": ("garlic paste", "suan4 ni2"),
    "衣服": ("clothes", "yi1 fu5"),
    "豆腐": ("tofu", "dou4 fu5"),
    "软糖": ("gummies", "ruan3 tang2"),
    "醋": ("vinegar", "cu4"),
    "钢琴": ("piano", "gang1 qin2"),
    "问题": ("problem", "wen4 ti2"),
    "需要": ("need", "xu1 yao4"),
    "青菜": ("vegetables", "qing1 cai4"),
    "面条": ("noodle", "mian4 tiao2"),
    "音乐": ("music", "yin1 yue4"),
    "预约": ("reserve", "yu4 yue1"),
    "香肠": ("sausage", "xiang1 chang2"),
    "鱼块": ("fish pieces", "yu2 kuai4"),
}

#: The 61 words in label order (sorted by Unicode code point).
WORDS: tuple[str, ...] = tuple(sorted(_TABLE))
#: Number of words (classes).
N_WORDS: int = len(WORDS)
#: English gloss of each word.
GLOSSES: dict[str, str] = {word: _TABLE[word][0] for word in WORDS}

_INDEX = {word: i for i, word in enumerate(WORDS)}
# Longest first so that "zh" wins over "z". y/w are treated as (glide) initials.
_INITIALS = ("zh", "ch", "sh", "b", "p", "m", "f", "d", "t", "n", "l", "g", "k", "h", "j", "q")
_INITIALS += ("x", "r", "z", "c", "s", "y", "w")


@dataclass(frozen=True)
class Syllable:
    """One Mandarin syllable in numbered pinyin.

    Parameters
    ----------
    pinyin : str
        Toneless pinyin, e.g. ``"qing"``.
    initial : str
        Onset consonant (``""`` if none; ``y``/``w`` count as initials).
    final : str
        The rest of the syllable, e.g. ``"ing"``.
    tone : int
        1-4, or 5 for the neutral tone.
    """

    pinyin: str
    initial: str
    final: str
    tone: int


def _parse_syllable(token: str) -> Syllable:
    base, tone = token[:-1], int(token[-1])
    initial = next((i for i in _INITIALS if base.startswith(i) and len(base) > len(i)), "")
    return Syllable(pinyin=base, initial=initial, final=base[len(initial) :], tone=tone)


def word_index(word: str) -> int:
    """Return the label index of ``word`` (its position in :data:`WORDS`).

    Parameters
    ----------
    word : str
        One of the 61 Chinese words.

    Returns
    -------
    int
        Index in ``0..60``.

    Raises
    ------
    KeyError
        If ``word`` is not in the vocabulary.
    """
    try:
        return _INDEX[word]
    except KeyError:
        raise KeyError(f"{word!r} is not one of the {N_WORDS} Du-IN words") from None


def gloss(word: str) -> str:
    """Return the English gloss of ``word`` (e.g. ``gloss("醋") == "vinegar"``)."""
    word_index(word)
    return GLOSSES[word]


def syllables(word: str) -> tuple[Syllable, ...]:
    """Return the syllables of ``word``, one per character.

    Parameters
    ----------
    word : str
        One of the 61 Chinese words.

    Returns
    -------
    tuple of Syllable
        Length 1 or 2.
    """
    word_index(word)
    return tuple(_parse_syllable(tok) for tok in _TABLE[word][1].split())


def check_labels(labels: Iterable[str], vocabulary: Iterable[str] | None, where: str) -> None:
    """Raise ``ValueError`` naming ``where`` if any label is outside ``vocabulary``.

    Parameters
    ----------
    labels : iterable of str
        Labels to check.
    vocabulary : iterable of str or None
        Allowed labels (e.g. :data:`WORDS`); ``None`` allows everything.
    where : str
        File or field to name in the message.
    """
    if vocabulary is None:
        return
    allowed = set(vocabulary)
    unknown = sorted({label for label in labels if label not in allowed})
    if unknown:
        raise ValueError(
            f"{where}: labels {unknown[:10]}{'...' if len(unknown) > 10 else ''} are not in the "
            f"vocabulary of {len(allowed)} words"
        )
