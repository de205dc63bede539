"""A small, balanced set of short synthetic movie reviews that the project writes itself.

It lets ``make demo`` and the tests run the whole pipeline without the IMDB data or a network.
The reviews are generated from phrase templates with a fixed seed, so the file is the same on
every machine. It is a demo: a model trained on it says nothing about accuracy on real reviews.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

from serving.contract import NEGATIVE_LABEL, POSITIVE_LABEL

# Reviews per class; a few hundred in all.
DEMO_REVIEWS_PER_CLASS = 200
DEMO_SEED = 20241124

SUBJECTS = (
    "this movie",
    "the film",
    "the acting",
    "the story",
    "the plot",
    "the cast",
    "the soundtrack",
    "the ending",
    "the script",
    "the direction",
    "the lead actor",
    "the dialogue",
    "this sequel",
    "the cinematography",
    "the pacing",
)
POSITIVE_WORDS = (
    "wonderful",
    "brilliant",
    "excellent",
    "superb",
    "moving",
    "delightful",
    "fantastic",
    "beautiful",
    "outstanding",
    "charming",
    "gripping",
    "masterful",
    "funny",
    "touching",
)
NEGATIVE_WORDS = (
    "awful",
    "boring",
    "terrible",
    "dull",
    "predictable",
    "painful",
    "horrible",
    "weak",
    "clumsy",
    "tedious",
    "forgettable",
    "stupid",
    "annoying",
    "disappointing",
)
POSITIVE_CLOSERS = (
    "I loved every minute of it.",
    "Highly recommended.",
    "A must see.",
    "I would happily watch it again.",
    "One of the best films this year.",
    "Ten out of ten.",
    "It made my day.",
)
NEGATIVE_CLOSERS = (
    "I want my money back.",
    "Avoid it.",
    "A complete waste of time.",
    "I walked out halfway through.",
    "One of the worst films this year.",
    "One out of ten.",
    "Do not bother.",
)
TEMPLATES = (
    "{Subject} was {word}. {closer}",
    "{Subject} was {word} and {subject2} was {word2}. {closer}",
    "Honestly, {subject} is {word}.<br /><br />{closer}",
    "What a {word} experience: {subject} felt {word2}. {closer}",
    "{closer} {Subject} was simply {word}.",
)


def generate_demo_reviews(
    per_class: int = DEMO_REVIEWS_PER_CLASS, seed: int = DEMO_SEED
) -> list[tuple[str, str]]:
    """``per_class`` positive and ``per_class`` negative (review, sentiment) pairs, shuffled."""
    rng = random.Random(seed)
    rows = []
    for sentiment, words, closers in (
        (POSITIVE_LABEL, POSITIVE_WORDS, POSITIVE_CLOSERS),
        (NEGATIVE_LABEL, NEGATIVE_WORDS, NEGATIVE_CLOSERS),
    ):
        seen: set[str] = set()
        while len(seen) < per_class:
            subject, subject2 = rng.sample(SUBJECTS, 2)
            word, word2 = rng.sample(words, 2)
            review = rng.choice(TEMPLATES).format(
                Subject=subject.capitalize(),
                subject=subject,
                subject2=subject2,
                word=word,
                word2=word2,
                closer=rng.choice(closers),
            )
            if review not in seen:
                seen.add(review)
                rows.append((review, sentiment))
    rng.shuffle(rows)
    return rows


def write_demo_csv(path: str | Path) -> Path:
    """Writes the demo set as a Kaggle-style ``review,sentiment`` CSV and returns its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["review", "sentiment"])
        writer.writerows(generate_demo_reviews())
    temporary.replace(path)
    return path
