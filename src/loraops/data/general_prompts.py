"""The built-in general prompts, written for loraops, in three disjoint pools.

- ``rehearsal``: trained on. The base model answers each once (greedy) and those self-generated pairs are
  mixed into training (``train.rehearsal.share``) so that the adapter keeps answering general requests as the
  base did.
- ``dev``: the search scores each trial's forgetting on it (selection never sees the test pool).
- ``test``: the ``evaluate`` stage and the promotion gate measure forgetting on it.

No prompt appears in two pools after :func:`normalise_prompt` (a test checks it): a model rehearsed on a
prompt would otherwise be credited for remembering it. Retention items carry their accepted answers,
separated by ``|`` (scoring: :mod:`loraops.evaluation.retention`); rehearsal prompts need none.
"""

from __future__ import annotations

import re

# (prompt, accepted answers separated by '|')
RETENTION_TEST: tuple[tuple[str, str], ...] = (
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



RETENTION_DEV: tuple[tuple[str, str], ...] = (
    ("What is the capital of Portugal? Answer with one word.", "lisbon"),
    ("What is the capital of Egypt? Answer with one word.", "cairo"),
    ("How many wheels does a bicycle have?", "2|two"),
    ("How many minutes are there in an hour?", "60|sixty"),
    ("What is 5 + 6?", "11|eleven"),
    ("What is 8 times 3?", "24|twenty four"),
    ("What is the opposite of day?", "night"),
    ("What colour are ripe bananas?", "yellow"),
    ("What is the plural of child?", "children"),
    ("Which animal says moo?", "cow"),
    ("What is the largest mammal on Earth?", "blue whale|whale"),
    ("Reply with the word no and nothing else.", "no"),
)

REHEARSAL_PROMPTS: tuple[str, ...] = (
    "Give me three tips for staying focused while studying.",
    "Explain in two sentences why the sky looks blue.",
    "Write a short friendly greeting for a new colleague.",
    "What is 12 + 30?",
    "Name three fruits that are red.",
    "Summarise what a library is in one sentence.",
    "How do you boil an egg?",
    "What is the capital of Canada?",
)

POOLS = {"dev": RETENTION_DEV, "test": RETENTION_TEST}


def normalise_prompt(text: str) -> str:
    """Lower case, every run of non-letters/digits as one space: how prompts are compared across pools."""
    return " ".join(re.sub(r"[^0-9a-z]+", " ", text.lower()).split())


def pool_overlaps() -> dict[str, list[str]]:
    """``{"a/b": [normalised prompts in both]}`` for every pair of pools that share a prompt (empty: disjoint)."""
    pools = {"rehearsal": [normalise_prompt(p) for p in REHEARSAL_PROMPTS],
             **{name: [normalise_prompt(p) for p, _ in items] for name, items in POOLS.items()}}
    names, found = sorted(pools), {}
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            shared = sorted(set(pools[a]) & set(pools[b]))
            if shared:
                found[f"{a}/{b}"] = shared
    return found
