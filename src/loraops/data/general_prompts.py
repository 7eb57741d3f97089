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
    ("What is the capital of Russia? Answer with one word.", "moscow"),
    ("What is the capital of China? Answer with one word.", "beijing|peking"),
    ("What is the capital of Greece? Answer with one word.", "athens"),
    ("What is the capital of Ireland? Answer with one word.", "dublin"),
    ("What is the capital of Austria? Answer with one word.", "vienna|wien"),
    ("Which planet do we live on?", "earth"),
    ("Which planet is closest to the Sun?", "mercury"),
    ("What is the natural satellite that orbits the Earth called?", "moon"),
    ("What is the chemical symbol for gold?", "au"),
    ("What gas do humans need to breathe in to stay alive?", "oxygen|o2"),
    ("How many legs does an insect have?", "6|six"),
    ("How many sides does a square have?", "4|four"),
    ("How many days are there in a leap year?", "366"),
    ("How many weeks are there in a year?", "52|fifty two"),
    ("How many players does a football team have on the field?", "11|eleven"),
    ("What is the tallest animal in the world?", "giraffe"),
    ("What is the fastest land animal?", "cheetah"),
    ("What does a caterpillar turn into?", "butterfly|butterflies|moth"),
    ("Which animal has a long trunk?", "elephant"),
    ("What is the main language spoken in Brazil?", "portuguese"),
    ("What colour are emeralds?", "green"),
    ("What is the hardest natural substance?", "diamond|diamonds"),
    ("Who painted the Mona Lisa?", "leonardo|da vinci|vinci"),
    ("What is the longest river in Africa?", "nile"),
    ("How many colours are there in a rainbow?", "7|seven"),
    ("What do you call a baby dog?", "puppy|pup"),
    ("What do you call a baby cat?", "kitten|kitty"),
    ("What is the opposite of big?", "small|little|tiny"),
    ("What is the opposite of fast?", "slow"),
    ("What is the plural of foot?", "feet"),
    ("What is the past tense of eat?", "ate"),
    ("What is the past tense of see?", "saw"),
    ("What is 7 + 8?", "15|fifteen"),
    ("What is 20 - 5?", "15|fifteen"),
    ("What is 12 times 12?", "144"),
    ("What is 3 times 4?", "12|twelve"),
    ("What is 50 + 50?", "100|one hundred"),
    ("What is 1000 minus 1?", "999"),
    ("What is 81 divided by 9?", "9|nine"),
    ("What is double 30?", "60|sixty"),
    ("Which is smaller, 8 or 3?", "3|three"),
    ("What is 5 squared?", "25|twenty five"),
    ("How many tens make one hundred?", "10|ten"),
    ("What is 11 + 11?", "22|twenty two"),
    ("Repeat exactly this word: window", "window"),
    ("Reply with the word blue and nothing else.", "blue"),
    ("Write the number seven as a digit.", "7"),
    ("Reverse the letters of the word top.", "pot|p o t"),
    ("What is the first letter of the word apple?", "a"),
    ("How many letters are there in the word cat?", "3|three"),
    ("Which word rhymes with cat: hat or dog?", "hat"),
    ("Put these two words in alphabetical order: pear, apple", "apple pear"),
    ("Complete the line: Twinkle, twinkle, little ...", "star"),
    ("Translate 'hola' from Spanish to English.", "hello|hi"),
    ("Translate 'chat' from French to English.", "cat"),
    ("What is the opposite of yes?", "no"),
    ("Which one is a fruit: carrot or apple?", "apple"),
    ("Answer with one word: what do teachers write with on a blackboard?", "chalk"),
    ("Which month comes after January?", "february"),
    ("Which day of the week comes after Monday?", "tuesday"),
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
    ("What is the capital of Sweden? Answer with one word.", "stockholm"),
    ("What is the capital of Norway? Answer with one word.", "oslo"),
    ("What is the capital of Poland? Answer with one word.", "warsaw"),
    ("What is the capital of Kenya? Answer with one word.", "nairobi"),
    ("What is the capital of the Netherlands? Answer with one word.", "amsterdam"),
    ("What is the capital of Denmark? Answer with one word.", "copenhagen"),
    ("What is the capital of Argentina?", "buenos aires"),
    ("Which planet is famous for its bright rings?", "saturn"),
    ("How many legs does a dog have?", "4|four"),
    ("How many eyes does a person have?", "2|two"),
    ("How many strings does a standard guitar have?", "6|six"),
    ("How many days are there in June?", "30|thirty"),
    ("What colour is fresh grass?", "green"),
    ("What colour is snow?", "white"),
    ("What do you call a baby sheep?", "lamb"),
    ("What do you call a young cow?", "calf"),
    ("Which animal has black and white stripes?", "zebra"),
    ("What is the tallest mountain in the world?", "everest"),
    ("Which metal is liquid at room temperature?", "mercury"),
    ("Which organs do we use to breathe?", "lungs|lung"),
    ("What do we call the first meal of the day?", "breakfast"),
    ("What is the currency of Japan?", "yen"),
    ("What is the main ingredient of bread?", "flour|wheat"),
    ("What is 9 + 4?", "13|thirteen"),
    ("What is 14 - 6?", "8|eight"),
    ("What is 7 times 5?", "35|thirty five"),
    ("What is 36 divided by 6?", "6|six"),
    ("What is half of 100?", "50|fifty"),
    ("What is 13 + 19?", "32|thirty two"),
    ("What is 2 times 50?", "100|one hundred"),
    ("Which is larger, 45 or 54?", "54"),
    ("What number comes just before 10?", "9|nine"),
    ("What is the square root of 81?", "9|nine"),
    ("Repeat exactly this word: orange", "orange"),
    ("Reply with the word hello and nothing else.", "hello"),
    ("Write the word red in upper case.", "red"),
    ("What is the opposite of open?", "closed|close|shut"),
    ("What is the opposite of happy?", "sad|unhappy"),
    ("What is the plural of tooth?", "teeth"),
    ("What is the plural of man?", "men"),
    ("What is the past tense of run?", "ran"),
    ("What is the past tense of write?", "wrote"),
    ("Which word rhymes with sun: fun or cup?", "fun"),
    ("What is the first letter of the word zebra?", "z"),
    ("How many letters are there in the word tree?", "4|four"),
    ("Translate 'perro' from Spanish to English.", "dog"),
    ("Translate 'rouge' from French to English.", "red"),
    ("Which month comes before December?", "november"),
    ("Which day of the week comes before Friday?", "thursday"),
    ("Complete the saying: An apple a day keeps the ... away.", "doctor"),
)

REHEARSAL_PROMPTS: tuple[str, ...] = (
    # how-to and explanations
    "Give me three tips for staying focused while studying.",
    "Explain in two sentences why we have seasons.",
    "How do you boil an egg?",
    "Summarise what a library is in one sentence.",
    "Explain what a noun is and give one example.",
    "Give two reasons why people keep a diary.",
    "Describe how to make a cup of tea.",
    "List four things to pack for a day at the beach.",
    "Explain the difference between weather and climate in simple words.",
    "How can I make my handwriting neater?",
    "What should I do if I feel sleepy in the afternoon?",
    "Explain what recycling means to a child.",
    "Give me a simple recipe for a cheese sandwich.",
    "What are the benefits of drinking enough fluids?",
    "How do I write a polite email asking for a day off?",
    "Explain why regular exercise is good for your health.",
    "Tell me how to plant a seed in a flower pot.",
    "Give three ideas for a rainy weekend at home.",
    "What is the difference between a town and a city?",
    "How do I keep a houseplant healthy?",
    "Explain what a budget is and why it helps.",
    "What is a good way to remember new vocabulary?",
    "How do you make a paper aeroplane?",
    "Explain what a map legend is.",
    "Give me two tips for a good night's sleep.",
    "How should I prepare for a job interview?",
    "Explain what an umbrella is for.",
    "Why do people wear seat belts in cars?",
    "How do you wash your hands properly?",
    "Explain the rules of noughts and crosses briefly.",
    "What is a verb? Give two examples.",
    "How can I save energy at home?",
    "Describe what a dentist does.",
    "Why is it important to read every day?",
    "What does a thermometer measure?",
    "Explain what a calendar is used for.",
    "How do bicycles stay upright when moving? Keep it short.",
    "Give three ways to be kind to a classmate.",
    "Explain the purpose of a dictionary.",
    "What is the job of a firefighter?",
    "Why do leaves fall from trees in autumn?",
    "How do I make a simple to-do list?",
    "What does a compass show?",
    "Explain what a vaccine does in one sentence.",
    "Describe how to cross a busy road safely.",
    "What is the purpose of a museum?",
    "Give a short definition of the word 'friendship'.",
    "How can someone learn to swim?",
    "What is the difference between a lake and a sea?",
    "Explain what a password is and why it should be secret.",
    # facts
    "What is the capital of Canada?",
    "What is the capital of Mexico?",
    "What is the capital of India?",
    "What is the capital of Turkey?",
    "Which ocean lies between Europe and North America?",
    "What is the largest country in the world by area?",
    "What language is mainly spoken in Mexico?",
    "Who invented the telephone?",
    "What is the longest bone in the human body?",
    "How many teeth does an adult human usually have?",
    "What is the currency of the United States?",
    "Which instrument has black and white keys?",
    "What do pandas mainly eat?",
    "How many hearts does an octopus have?",
    "Which animal carries its shell on its back?",
    "What do you call a person who flies an aeroplane?",
    "What is the name of the galaxy we live in?",
    "Which season comes after winter?",
    "What is the main ingredient of guacamole?",
    "Which animal is known for building dams?",
    "What is the name of the frozen continent at the South Pole?",
    "Which country is famous for kangaroos?",
    "What do bakers make?",
    "What is the name of a shape with eight sides?",
    "Which sense do we use our nose for?",
    "Name three fruits that are red.",
    "Name two animals that live in the sea.",
    "Name three musical instruments.",
    "Name four vegetables that grow underground.",
    "What is a group of wolves called?",
    # arithmetic
    "What is 12 + 30?",
    "What is 34 + 12?",
    "Calculate 9 times 8.",
    "What is 60 divided by 5?",
    "Subtract 17 from 40.",
    "What is 15 percent of 200?",
    "If I have 5 pears and eat 2, how many are left?",
    "What is 7 + 7 + 7?",
    "What is 250 + 250?",
    "What is 1 + 2 + 3 + 4?",
    "What is three quarters of 40?",
    "Round 3.7 to the nearest whole number.",
    "What is 2 to the power of 5?",
    "Is 17 a prime number?",
    "What is the next number in the sequence 2, 4, 6, 8?",
    "What is 0.5 plus 0.25?",
    "A bus leaves at 3 pm and the trip takes 2 hours. When does it arrive?",
    "What is 30 times 3?",
    "Count from one to five.",
    "What is 19 minus 11?",
    "Which of these is even: 7, 9 or 12?",
    "What is 45 divided by 9?",
    "Add 125 and 75.",
    "What is the sum of 8 and 13?",
    "Multiply 11 by 4.",
    "What is 90 minus 45?",
    "What is a third of 30?",
    "What is 4 cubed?",
    "I bought three books at 4 euros each. How much did I spend?",
    "How many quarters make a whole?",
    # short writing
    "Write a short friendly greeting for a new colleague.",
    "Write a haiku about autumn leaves.",
    "Write a two-line poem about the sea.",
    "Write a thank-you note to a neighbour who watered my plants.",
    "Write a short description of a reusable water bottle.",
    "Write a one-sentence announcement for a school bake sale.",
    "Write an opening line for a mystery story.",
    "Write a short apology for arriving late to a meeting.",
    "Write a limerick about a forgetful robot.",
    "Describe an ideal weekend in three sentences.",
    "Write a short encouraging message for someone starting a new job.",
    "Write a birthday message for a grandmother.",
    "Write a sentence using the word 'curious'.",
    "Suggest a title for a story about a lost key.",
    "Suggest a name for a small bakery.",
    "Write a short invitation to a picnic in the park.",
    "Describe a busy market in two sentences.",
    "Write a riddle whose answer is a clock.",
    "Write a slogan for a neighbourhood clean-up day.",
    "Write a short note reminding a friend about dinner on Saturday.",
    # word tasks
    "Give a synonym for 'quick'.",
    "What is the opposite of 'ancient'?",
    "Use the word 'bright' in a sentence.",
    "Correct the spelling of 'recieve'.",
    "Make this sentence more formal: 'Can you send me the file?'",
    "Turn this statement into a question: 'She is at home.'",
    "Rewrite in the past tense: 'I walk to school.'",
    "Which word is the odd one out: banana, hammer, grape, plum?",
    "Sort these numbers from smallest to largest: 9, 2, 7, 4.",
    "Give a word that rhymes with 'moon'.",
    "How many vowels are in the word 'education'?",
    "Capitalise each word: 'the quick brown fox'.",
    "What does the abbreviation 'etc.' mean?",
    "Combine these two sentences into one: 'It rained. We stayed inside.'",
    "Give me three adjectives that describe the ocean.",
    "Translate 'good night' into Spanish.",
    "Translate 'cheese' into French.",
    "What is the plural of 'box'?",
    "Rewrite this sentence without the typo: 'The dog runned fast.'",
    "List the days of the weekend.",
)

POOLS = {"dev": RETENTION_DEV, "test": RETENTION_TEST}


def normalise_prompt(text: str) -> str:
    """Lower case, every run of non-letters/digits as one space: how prompts are compared across pools."""
    return " ".join(re.sub(r"[^0-9a-z]+", " ", text.lower()).split())


# Words that carry no content: two prompts differing only in these ask the same thing.
_FILLER = frozenset("a an the of is are what whats which how many do does you your in to and or for with word "
                    "words from one answer this that there on at be it its called s please tell me".split())


def _content_words(prompt: str) -> frozenset[str]:
    return frozenset(normalise_prompt(prompt).split()) - _FILLER


def _all_pools() -> dict[str, list[str]]:
    return {"rehearsal": list(REHEARSAL_PROMPTS), **{name: [p for p, _ in items] for name, items in POOLS.items()}}


def near_duplicates(threshold: float = 0.7) -> list[tuple[str, str, float]]:
    """Prompt pairs from two different pools whose content words (filler words left out) overlap by at
    least ``threshold`` (Jaccard): the same question in other words. Template siblings such as "What is 6
    times 7?" / "What is 7 times 5?" stay below 0.7; "What is the capital of France?" / "Tell me the capital of
    France." do not."""
    pools, found = _all_pools(), []
    names = sorted(pools)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            for x in pools[a]:
                for y in pools[b]:
                    wx, wy = _content_words(x), _content_words(y)
                    score = len(wx & wy) / max(1, len(wx | wy))
                    if score >= threshold:
                        found.append((x, y, score))
    return found


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
