"""Forgetting: a built-in retention set of general prompts that are not part of any loraops task.

Written for loraops (no third-party text, so no licence strings attached). Each item is a short
general-knowledge, arithmetic or instruction-following prompt with one or more accepted answers. The
prompts are rendered with the model's chat template and NO task system prompt, so what is measured is
the model's general behaviour, not the task it was tuned for.

Scoring rule: an answer is right when one accepted answer, normalised (lower case, every run of
characters other than letters/digits becomes one space), occurs in the normalised answer as whole words.
"Paris" is found in "The capital of France is Paris." but "4" is not found in "14" or "40". A model
that rambles on is not punished; one that names the wrong thing first and the right thing later is
(rarely) credited, which affects every model alike. Retention = share of items right; a model's
retention drop = base retention - its retention (positive means it forgot).
"""

from __future__ import annotations

import re
from typing import Any

# (prompt, accepted answers separated by '|')
RETENTION_ITEMS: tuple[tuple[str, str], ...] = (
    ("What is the capital of France? Answer with one word.", "paris"),
    ("What is the capital of Japan? Answer with one word.", "tokyo"),
    ("What is the capital of Italy? Answer with one word.", "rome"),
    ("What is the capital of Germany? Answer with one word.", "berlin"),
    ("What is the capital of Spain? Answer with one word.", "madrid"),
    ("What is the capital of the United Kingdom? Answer with one word.", "london"),
    ("Which planet is known as the Red Planet?", "mars"),
    ("What is the largest planet in our solar system?", "jupiter"),
    ("Which star is at the centre of our solar system?", "sun"),
    ("What is the chemical symbol for water?", "h2o"),
    ("What gas do plants absorb from the air to make food?", "carbon dioxide|co2"),
    ("What is the freezing point of water in degrees Celsius?", "0|zero"),
    ("What is the boiling point of water at sea level in degrees Celsius?", "100"),
    ("How many days are there in a week?", "7|seven"),
    ("How many months are there in a year?", "12|twelve"),
    ("How many hours are there in a day?", "24|twenty four"),
    ("How many legs does a spider have?", "8|eight"),
    ("How many sides does a triangle have?", "3|three"),
    ("How many continents are there on Earth?", "7|seven"),
    ("What colour do you get when you mix blue and yellow?", "green"),
    ("What colour is the sky on a clear day?", "blue"),
    ("Which animal is known as the king of the jungle?", "lion"),
    ("What is the largest ocean on Earth?", "pacific"),
    ("What is the opposite of hot?", "cold"),
    ("What is the opposite of up?", "down"),
    ("What is the plural of mouse?", "mice"),
    ("What is the past tense of go?", "went"),
    ("What is 2 + 2?", "4|four"),
    ("What is 3 + 5?", "8|eight"),
    ("What is 10 - 3?", "7|seven"),
    ("What is 6 times 7?", "42|forty two"),
    ("What is 9 times 9?", "81|eighty one"),
    ("What is 100 divided by 4?", "25|twenty five"),
    ("What is half of 50?", "25|twenty five"),
    ("What is 15 + 27?", "42|forty two"),
    ("What number comes after 99?", "100|one hundred"),
    ("Which is larger, 17 or 71?", "71"),
    ("What is the square root of 16?", "4|four"),
    ("Repeat exactly this word: banana", "banana"),
    ("Reply with the word yes and nothing else.", "yes"),
    ("Write the word cat in capital letters.", "cat"),
    ("Spell the word dog backwards.", "god|g o d"),
    ("What is the first letter of the English alphabet?", "a"),
    ("What is the last letter of the English alphabet?", "z|zed|zee"),
    ("Complete the sentence: The early bird catches the ...", "worm"),
    ("Translate 'bonjour' from French to English.", "hello|good morning|good day"),
    ("Translate 'gracias' from Spanish to English.", "thank you|thanks"),
    ("What do bees make?", "honey"),
    ("What do cows drink?", "water"),
    ("Which organ pumps blood through the human body?", "heart"),
    ("What is frozen water called?", "ice"),
    ("Who wrote the play Romeo and Juliet?", "shakespeare"),
)


def normalise_text(text: str) -> str:
    return " ".join(re.sub(r"[^0-9a-z]+", " ", text.lower()).split())


def is_retained(answer: str, accepted: str) -> bool:
    """The retention scoring rule (module docstring): an accepted answer occurs as whole words."""
    words = f" {normalise_text(answer)} "
    return any(f" {normalise_text(option)} " in words for option in accepted.split("|") if normalise_text(option))


def retention_prompts(tokenizer: Any) -> list[str]:
    """Each item as a single user turn in the model's chat template, without the task's system prompt."""
    return [tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                          add_generation_prompt=True) for prompt, _ in RETENTION_ITEMS]


def score_retention(answers: list[str]) -> tuple[float, list[dict[str, Any]]]:
    """(retention, per-item records) for generated ``answers`` in RETENTION_ITEMS order."""
    if len(answers) != len(RETENTION_ITEMS):
        raise ValueError(f"{len(answers)} answers for {len(RETENTION_ITEMS)} retention items")
    items = [{"prompt": prompt, "accepted": accepted, "answer": answer, "retained": is_retained(answer, accepted)}
             for (prompt, accepted), answer in zip(RETENTION_ITEMS, answers)]
    return sum(i["retained"] for i in items) / len(items), items
