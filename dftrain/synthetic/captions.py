"""LAION-like specific captions: invented brands, product codes, sizes, prices,
places, people and dates, mixed with what the image shows ("red star").

The point is specificity: generalized captions (the paper's method) should strip
exactly these details, and the generality score should rate them low.
"""

from __future__ import annotations

import numpy as np

BRANDS = [
    "Lumora", "Vextra", "Quanby", "Zephyro", "Orkana", "Brivo", "Telmar", "Kestrova", "Nimbalo", "Solvique",
    "Arcturo", "Pellwyn", "Draxton", "Miravel", "Tovango", "Ulvira", "Caspen", "Ferrowyn", "Glimmeron", "Haldex",
    "Iskaro", "Jovalta", "Korvine", "Lazenby", "Moxley", "Norvella", "Obrinza", "Pravia", "Quillon", "Rastova",
]
CITIES = [
    "Paris", "Berlin", "Tokyo", "Lisbon", "Chicago", "Oslo", "Nairobi", "Lima", "Seoul", "Toronto",
    "Melbourne", "Prague", "Cairo", "Austin", "Milan", "Dublin", "Istanbul", "Kyoto", "Boston", "Vienna",
    "Mumbai", "Reykjavik", "Havana", "Zurich", "Krakow", "Denver", "Porto", "Tallinn", "Osaka", "Madrid",
]
FIRST_NAMES = [
    "Anna", "Marco", "Yuki", "Lena", "Omar", "Priya", "Jonas", "Sofia", "Diego", "Ingrid",
    "Kwame", "Elena", "Tomas", "Mei", "Rafael", "Astrid", "Hugo", "Nadia", "Felix", "Chloe",
]
LAST_NAMES = [
    "Kovacs", "Rossi", "Tanaka", "Fischer", "Haddad", "Sharma", "Berg", "Moreau", "Alvarez", "Lindqvist",
    "Mensah", "Petrova", "Novak", "Chen", "Duarte", "Nilsen", "Laurent", "Rahimi", "Weber", "Dubois",
]
ITEMS = [
    "poster", "art print", "t-shirt", "sticker", "mug", "canvas", "wallpaper", "logo", "badge", "greeting card",
    "tote bag", "phone case", "pillow", "notebook cover", "enamel pin", "banner", "flag", "decal", "coaster", "scarf",
]
ADJECTIVES = [
    "Vintage", "Retro", "Modern", "Minimalist", "Handmade", "Limited", "Classic", "Abstract", "Bold", "Rare",
    "Original", "Signed", "Deluxe", "Official", "Custom",
]
MONTHS = [
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
]
TEMPLATES = [
    "{adj} {brand} {code} {colour} {shape} {item} by {person}, {city} {year}, {size}",
    "{brand} {item} \"{title}\" - {colour} {shape} on {bg} background, {size}, {price}",
    "{person} {colour} {shape} {item} #{number} | {brand} {code} | shipped from {city}",
    "{colour} {shape} {item} {code} by {brand}, {city}, {date}, only {price}",
    "{adj} {colour} {shape} and {colour2} {shape2} {item} - {brand} collection {year}, {size}",
    "Buy {brand} {code} {item} with {colour} {shape} design, {size}, {price} free shipping",
    "{person} photographed a {colour} {shape} {item} in {city} on {date}",
    "{brand} {code}: {colour} {shape} {item}, edition of {number}, signed by {person}",
    "{item} {code} {colour} {shape} {bg} pattern {brand} {year} {city} store {price}",
    "{adj} {brand} {colour} {shape} {item}, model {code}, {size}, designed in {city} by {person}",
]
TITLE_WORDS = ["Dawn", "Echo", "Orbit", "Nova", "Drift", "Pulse", "Ember", "Tide", "Prism", "Halo", "Vertex", "Bloom"]


def _pick(rng: np.random.Generator, options: list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def product_code(rng: np.random.Generator) -> str:
    letters = "".join(chr(ord("A") + int(i)) for i in rng.integers(0, 26, size=int(rng.integers(2, 4))))
    return f"{letters}-{int(rng.integers(100, 10000))}"


def size_text(rng: np.random.Generator) -> str:
    kind = int(rng.integers(4))
    if kind == 0:
        return f"{int(rng.integers(8, 40))}x{int(rng.integers(10, 60))} in"
    if kind == 1:
        return f"{int(rng.integers(20, 100))} x {int(rng.integers(30, 140))} cm"
    if kind == 2:
        return f"{int(rng.integers(6, 24))} oz"
    return f"size {_pick(rng, ['XS', 'S', 'M', 'L', 'XL', 'XXL'])}"


def price_text(rng: np.random.Generator) -> str:
    currency = _pick(rng, ["$", "€", "£"])
    return f"{currency}{int(rng.integers(3, 250))}.{_pick(rng, ['99', '95', '50', '00'])}"


def date_text(rng: np.random.Generator) -> str:
    year = int(rng.integers(1950, 2024))
    if rng.random() < 0.5:
        return f"{_pick(rng, MONTHS)} {int(rng.integers(1, 29))}, {year}"
    return f"{year}-{int(rng.integers(1, 13)):02d}-{int(rng.integers(1, 29)):02d}"


def specific_caption(rng: np.random.Generator, visible: dict[str, str]) -> str:
    """One caption for an image whose visible content is `visible`
    (keys colour, shape, colour2, shape2, bg)."""
    template = _pick(rng, TEMPLATES)
    fields = {
        "adj": _pick(rng, ADJECTIVES),
        "brand": _pick(rng, BRANDS),
        "code": product_code(rng),
        "item": _pick(rng, ITEMS),
        "person": f"{_pick(rng, FIRST_NAMES)} {_pick(rng, LAST_NAMES)}",
        "city": _pick(rng, CITIES),
        "year": str(int(rng.integers(1950, 2024))),
        "date": date_text(rng),
        "size": size_text(rng),
        "price": price_text(rng),
        "number": str(int(rng.integers(2, 999))),
        "title": f"{_pick(rng, TITLE_WORDS)} {int(rng.integers(1, 99))}",
        **visible,
    }
    return template.format(**fields)


def vary_caption(caption: str, rng: np.random.Generator) -> str:
    """A re-upload's caption: mostly the same text, sometimes re-priced, trimmed or tagged (as on the web)."""
    choice = int(rng.integers(5))
    if choice == 0:
        return caption
    if choice == 1:
        return f"{caption} | free shipping"
    if choice == 2 and ", " in caption:
        return caption.rsplit(", ", 1)[0]
    if choice == 3:
        return f"{caption} - {price_text(rng)}"
    return caption.lower()


def caption_corpus(seed: int, n: int = 3000) -> list[str]:
    """Synthetic-style captions (without drawing images) to learn the tokenizer's merges from."""
    from dftrain.synthetic.palette import NAMED_COLOURS
    from dftrain.synthetic.shapes import SHAPES

    rng = np.random.default_rng([seed, 77])
    colours, shapes = list(NAMED_COLOURS), list(SHAPES)
    styles = ["gradient", "striped", "checkered", "textured", "glowing", "plain"]
    captions = []
    for _ in range(n):
        visible = {
            "colour": colours[int(rng.integers(len(colours)))],
            "shape": shapes[int(rng.integers(len(shapes)))],
            "colour2": colours[int(rng.integers(len(colours)))],
            "shape2": shapes[int(rng.integers(len(shapes)))],
            "bg": styles[int(rng.integers(len(styles)))],
        }
        captions.append(specific_caption(rng, visible))
    return captions
