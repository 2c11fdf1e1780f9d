"""Shared data and fixtures for the score tests."""

from __future__ import annotations

import pytest

# (specific LAION-like caption, general caption describing the same image), written by hand.
CAPTION_PAIRS = [
    ("Nike Air Max 270 React running shoes, size 42, black/white, 2019 edition", "a pair of shoes"),
    ("Barack Obama speaking at the White House on January 20, 2009", "a man giving a speech"),
    ("Eiffel Tower at sunset, Paris, France, July 2018", "a tower at sunset"),
    ("Apple iPhone 13 Pro Max 256GB Sierra Blue MLL93LL/A", "a phone"),
    ("Taylor Swift performs at Madison Square Garden in New York, 2015", "a woman singing on a stage"),
    ("IKEA KALLAX shelf unit 77x147 cm white 802.758.87", "a white shelf"),
    ("Vintage 1965 Ford Mustang GT convertible in Candy Apple Red", "an old car"),
    ("Golden Gate Bridge, San Francisco, California, photographed by John Smith", "a bridge over water"),
    ("Samsung Galaxy S21 Ultra 5G SM-G998B 128GB Phantom Black", "a black phone"),
    ("Leonardo da Vinci, Mona Lisa, 1503, oil on poplar, Louvre Museum", "a painting of a woman"),
    ("Canon EOS 5D Mark IV DSLR camera with EF 24-105mm f/4L lens", "a camera"),
    ("LEGO Star Wars 75192 Millennium Falcon Ultimate Collector Series", "a toy spaceship"),
    (
        "Cristiano Ronaldo celebrates a goal for Real Madrid against Barcelona in 2012",
        "a man playing football",
    ),
    ("Sunrise over Mount Fuji from Lake Kawaguchi, Japan, April 2017", "a mountain at sunrise"),
    ("Adidas Originals Superstar sneakers FV3284 white/core black", "white shoes"),
    ("Queen Elizabeth II at Buckingham Palace, London, June 2012", "an old woman"),
    ("Starbucks Pumpkin Spice Latte grande cup, October 2020", "a cup of coffee"),
    ("Tesla Model 3 Long Range 2021 in Pearl White Multi-Coat", "a white car"),
    ("Times Square, New York City, December 31, 2019 New Year's Eve", "a busy street at night"),
    ("Rolex Submariner Date 126610LN 41mm stainless steel watch", "a watch"),
    ("Harry Potter and the Philosopher's Stone, Bloomsbury 1997 first edition hardcover", "a book"),
    ("Sony WH-1000XM4 wireless noise cancelling headphones, black", "headphones"),
    ("The Beatles on The Ed Sullivan Show, February 9, 1964", "a band playing music"),
    ("Coca-Cola Classic 330ml can, 24 pack", "cans of soda"),
    ("Grand Canyon National Park, Arizona, USA, South Rim view, 2016", "a canyon"),
    ("Dell XPS 13 9310 laptop with Intel Core i7-1165G7 and 16GB RAM", "a laptop on a table"),
    ("Serena Williams wins Wimbledon final against Garbine Muguruza, 2015", "a woman playing tennis"),
    ("Big Ben and the Houses of Parliament, Westminster, London, UK", "a clock tower"),
    ("Levi's 501 Original Fit jeans W32 L34 medium stonewash", "blue jeans"),
    ("Vincent van Gogh, The Starry Night, 1889, Museum of Modern Art", "a painting of the night sky"),
    ("KitchenAid Artisan KSM150PSER 5-quart stand mixer, Empire Red", "a red kitchen appliance"),
    ("Sydney Opera House and Harbour Bridge at night, Australia, 2014", "a building by the sea at night"),
    (
        "Michael Jordan dunks for the Chicago Bulls at the 1988 NBA Slam Dunk Contest",
        "a man playing basketball",
    ),
    ("Toyota Corolla Hybrid 2022 1.8 VVT-i CVT in Silver Metallic", "a car"),
    ("Kyoto Fushimi Inari shrine torii gates, November 2019", "a path through red gates"),
]


class FakeBackend:
    """A TextBackend stand-in: replies from a script, one list per .chat call, records the calls."""

    def __init__(self, script):
        self.script = list(script)
        self.calls: list[list[list[dict]]] = []

    def chat(self, conversations, *, max_new_tokens):
        self.calls.append(conversations)
        replies = self.script.pop(0)
        if callable(replies):
            return replies(conversations)
        return list(replies)

    def complete(self, prompts, *, max_new_tokens, stop=None):  # pragma: no cover - not used by the judge
        raise AssertionError("the judge uses chat()")


class CountingPipeline:
    """Wraps a spaCy Language and records how many texts reach nlp.pipe."""

    def __init__(self, nlp):
        self.nlp = nlp
        self.texts: list[str] = []

    def pipe(self, texts, **kwargs):
        texts = list(texts)
        self.texts.extend(texts)
        return self.nlp.pipe(texts, **kwargs)


@pytest.fixture(scope="session")
def score_cache_dir(tmp_path_factory):
    """One DFTRAIN_CACHE folder for all score test modules (WordNet root + statistics built once).

    Only the folder is session-wide; each module sets DFTRAIN_CACHE to it for its own duration.
    """
    # Each test module imports this fixture, so pytest keeps one definition per module: derive the
    # folder from the session's base temp dir so that every module gets the same one.
    folder = tmp_path_factory.getbasetemp() / "dftrain_score_cache"
    folder.mkdir(exist_ok=True)
    return folder
