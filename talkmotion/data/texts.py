"""Sentences for the TTS corpus: a small English grammar over word lists written for talkmotion.

Offline and deterministic: `sentence(seed, index)` is always the same text.
The templates mix statements, questions, exclamations, commas (pauses) and
two-sentence turns; the word lists cover every English phone in many contexts
(bilabials, rounded vowels, f/v, open vowels...). With the lists below the
grammar has well over a billion distinct sentences, so thousands of clips
rarely repeat one.

Held-out text: every sentence belongs to one split by a hash of its words
(`text_split`), so a test sentence is never a training sentence, whoever
generates it.
"""

from __future__ import annotations

import re
import zlib

import numpy as np

# Split by text: hash buckets out of 100.
TEST_PERCENT = 10
VAL_PERCENT = 10

NAMES = ("Anna", "Bob", "Maria", "Peter", "Olivia", "Victor", "Fiona", "George", "Ruth", "Paul", "Mabel",
         "Oscar", "Judy", "Wally", "Hugo", "Chloe", "Martin", "Beth", "Yusuf", "Zoe", "Theo", "Lucy",
         "Owen", "Vera", "Boris", "Nora", "Kevin", "Ivy", "Sam", "Rosa")
NOUNS = ("book", "garden", "window", "bottle", "river", "mountain", "letter", "piano", "blanket",
         "market", "bridge", "coffee", "museum", "pebble", "rocket", "balloon", "ferry", "village", "puzzle",
         "orange", "umbrella", "harbor", "violin", "meadow", "lantern", "pocket", "suitcase", "map",
         "bicycle", "biscuit", "photo", "feather", "cupboard", "moon", "boat", "shoe", "voice", "forest",
         "engine", "jacket", "camera", "ladder", "mirror", "tower", "valley", "whistle", "zebra", "puppy",
         "soup", "cake", "drum", "bench", "field", "island", "kitchen", "notebook", "pumpkin", "scarf")
ADJECTIVES = ("old", "bright", "quiet", "heavy", "tiny", "purple", "famous", "broken", "warm", "noisy",
              "yellow", "smooth", "curious", "gloomy", "brave", "frozen", "velvet", "empty", "shiny",
              "bumpy", "lovely", "awful", "golden", "humble", "rough", "wooden", "soft", "modern",
              "peaceful", "strange", "bold", "massive", "pale", "muddy", "fabulous", "open")
VERBS = (("bring", "brought"), ("move", "moved"), ("paint", "painted"), ("open", "opened"),
         ("find", "found"), ("buy", "bought"), ("fix", "fixed"), ("wash", "washed"), ("borrow", "borrowed"),
         ("carry", "carried"), ("hide", "hid", "hidden"), ("push", "pushed"), ("follow", "followed"),
         ("photograph", "photographed"), ("measure", "measured"), ("throw", "threw", "thrown"), ("choose", "chose", "chosen"),
         ("describe", "described"), ("improve", "improved"), ("watch", "watched"), ("visit", "visited"),
         ("pack", "packed"), ("bake", "baked"), ("sell", "sold"), ("remember", "remembered"),
         ("leave", "left"), ("keep", "kept"), ("check", "checked"), ("share", "shared"), ("mop", "mopped"))
PLACES = ("the station", "the old harbor", "the top floor", "the school yard", "the bakery",
          "the town square", "the beach", "the office", "the library", "the back porch", "the zoo",
          "the movie theater", "the farm", "the boat house", "the museum shop", "the bus stop",
          "the garage", "the hospital", "the playground", "the north road", "the village hall")
TIMES = ("yesterday", "this morning", "last week", "on Monday", "after lunch", "before dawn",
         "every summer", "at midnight", "in April", "last Friday", "early today", "two hours ago",
         "next Thursday", "during the storm", "at noon")
DEADLINES = ("dinner", "the weekend", "Friday", "noon", "the guests arrive", "it gets dark", "winter",
             "the bus leaves", "tomorrow morning", "the end of June")
ADVERBS = ("slowly", "quickly", "carefully", "happily", "quietly", "boldly", "proudly", "gently",
           "loudly", "politely", "awkwardly", "smoothly", "rarely", "openly")
NUMBERS = ("two", "three", "four", "five", "seven", "nine", "twelve", "fifteen", "twenty", "a hundred",
           "a few", "several", "many", "some")
OPENERS = ("Well", "Oh", "You know", "Honestly", "Look", "By the way", "Actually", "Wow", "Please",
           "Of course", "Maybe", "Now")
FEELINGS = ("happy", "surprised", "worried", "amazed", "tired", "proud", "puzzled", "upset", "thrilled",
            "bored")

TEMPLATES = (
    "{Name} {past} the {adj} {noun} to {place} {time}.",
    "The {adj} {noun} was {adv} {participle} by {Name}.",
    "Did you {verb} the {noun} at {place} {time}?",
    "{Opener}, I think we should {verb} the {adj} {noun} before {deadline}.",
    "Why would anyone {verb} a {adj} {noun} near {place}?",
    "We {past} {number} {nouns} at {place} {time}.",
    "What a {adj} {noun} that was!",
    "{Name} said the {noun} looked {adj}, but {Name2} was not so sure.",
    "Please {verb} my {noun} {adv}, and then {verb2} the {noun2}.",
    "If you {verb} the {noun}, {Name} will be {feeling}.",
    "{Opener}! {Name} {past} the {noun} {adv}.",
    "Could you {verb} the {adj} {noun} for me, please?",
    "I was {feeling} when {Name} {past} the {noun} {time}.",
    "Nobody knew why the {noun} at {place} was so {adj}.",
    "{Name} and {Name2} {past} a {adj} {noun} {time}. It was {adj2}!",
    "Have you ever seen a {adj} {noun} at {place}?",
    "The {noun} is {adj}, the {noun2} is {adj2}, and the {noun3} is gone.",
    "{Opener}, {Name}, where did you {verb} the {noun}?",
    "My {adj} {noun} fell into the {noun2} {time}.",
    "{Name} will {verb} {number} {nouns} before {deadline}, I promise.",
)


def _plural(noun: str) -> str:
    if noun.endswith(("s", "sh", "ch", "x")):
        return noun + "es"
    if noun.endswith("y") and noun[-2] not in "aeiou":
        return noun[:-1] + "ies"
    if noun.endswith("f"):
        return noun[:-1] + "ves"
    return noun + "s"


def sentence(seed: int, index: int) -> str:
    """The index-th sentence of the grammar stream for `seed` (deterministic)."""
    rng = np.random.default_rng([seed, index, 0x7e47])
    pick = lambda words: words[int(rng.integers(len(words)))]   # noqa: E731 - local shorthand
    nouns = [pick(NOUNS) for _ in range(3)]
    verbs = [pick(VERBS) for _ in range(2)]
    names = [pick(NAMES), pick(NAMES)]
    fields = {
        "Name": names[0], "Name2": names[1] if names[1] != names[0] else "everyone else",
        "noun": nouns[0], "noun2": nouns[1], "noun3": nouns[2], "nouns": _plural(nouns[0]),
        "adj": pick(ADJECTIVES), "adj2": pick(ADJECTIVES), "adv": pick(ADVERBS),
        "verb": verbs[0][0], "verb2": verbs[1][0], "past": verbs[0][1], "participle": verbs[0][-1],
        "place": pick(PLACES), "time": pick(TIMES), "number": pick(NUMBERS),
        "deadline": pick(DEADLINES), "Opener": pick(OPENERS), "feeling": pick(FEELINGS),
    }
    text = pick(TEMPLATES).format(**fields)
    text = re.sub(r"\ba ([aeiou])", r"an \1", text)
    return text[0].upper() + text[1:]


def text_split(text: str) -> str:
    """'train', 'val' or 'test' for a sentence, from a hash of its lower-cased words."""
    words = " ".join(re.findall(r"[a-z']+", text.lower()))
    bucket = zlib.crc32(words.encode("utf-8")) % 100
    if bucket < TEST_PERCENT:
        return "test"
    if bucket < TEST_PERCENT + VAL_PERCENT:
        return "val"
    return "train"


def sentence_for_split(seed: int, index: int, split: str, max_tries: int = 10_000) -> str:
    """The first sentence of clip `index`'s own stream that belongs to `split`."""
    for attempt in range(max_tries):
        text = sentence(seed, index * max_tries + attempt)
        if text_split(text) == split:
            return text
    raise RuntimeError(f"no {split} sentence in {max_tries} tries")   # unreachable with 10 % buckets
