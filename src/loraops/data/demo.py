"""Built-in demo dataset: customer-support request -> intent classification.

Generates a small but realistic e-commerce support corpus deterministically from
a seed, using only the standard library. Every intent owns phrasing templates
that are partitioned into train-only and test-only templates, so test records use
phrasings never seen in training and the split measures generalisation rather
than memorisation. Slot values (order numbers, products, dates, amounts, ...),
casing/punctuation noise, greetings and injected typos add surface variety.
"""

from __future__ import annotations

import functools
import random
import re
import string
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import NamedTuple

MAX_TEXT_LEN = 300
TYPO_RECORD_PROB = 0.3  # share of records that get 1-2 typos


class IntentTemplates(NamedTuple):
    train_templates: tuple[str, ...]
    test_templates: tuple[str, ...]


_T = IntentTemplates

TEMPLATES: Mapping[str, IntentTemplates] = MappingProxyType({
    "cancel_order": _T(
        ("Can I cancel my order {order}?", "Please cancel order {order}, I ordered the {product} by mistake.",
         "I need to cancel an order I placed {date}.",
         "Why is there no cancel button?? I want order {order} cancelled NOW.", "cancel order {order}"),
        ("Is it too late to stop the shipment of my {product}? Order {order}.",
         "changed my mind about the {product}, don't send it",
         "Would you kindly void my purchase from {date}? It was {amount}.")),
    "track_order": _T(
        ("Where is my order {order}?", "Can you tell me when my {product} will arrive?",
         "Please give me the tracking number for order {order}.",
         "I ordered {date} and still nothing has shown up. This is ridiculous.", "status of {order}?"),
        ("Has my package with the {product} shipped yet?",
         "tracking link for {order} doesn't work, what's the delivery estimate",
         "I'd appreciate an update on the whereabouts of my parcel, order {order}.")),
    "request_refund": _T(
        ("I want a refund for order {order}.", "Can I get my money back for the {product}?",
         "Please refund the {amount} I paid for the {product}.",
         "Still waiting on my refund from {date}. Where is my money?!", "refund pls {order}"),
        ("How long does it take for a refund of {amount} to hit my card?",
         "The {product} was not as described, I expect a full reimbursement.",
         "I returned the {product} {date}, when will I be credited?")),
    "change_shipping_address": _T(
        ("Can I change the delivery address on order {order}?", "Please ship order {order} to {address} instead.",
         "I moved recently, how do I update my shipping address?",
         "You sent it to my OLD address again. Change it to {address}!", "new address: {address}, order {order}"),
        ("Is it possible to redirect my parcel to {address}? It hasn't shipped yet.",
         "wrong address on {order}, fix it",
         "My {product} should go to my office at {address} rather than my home.")),
    "reset_password": _T(
        ("I forgot my password, how do I reset it?", "Please send a password reset link to {email}.",
         "The reset email never arrives at {email}. I've tried five times!",
         "Can't log in, password not working", "How can I change my password on the app?"),
        ("locked out of my account after too many attempts, help",
         "Would you mind helping me regain access? My login for {email} is rejected.",
         "need a new password, I don't remember the old one")),
    "update_payment_method": _T(
        ("How do I update my credit card on file?", "Please replace my {card} with a new card.",
         "My card expired, I need to add a new payment method.",
         "I keep getting 'payment declined' with my {card}. Let me use PayPal instead!",
         "change payment method to {card}"),
        ("Can I switch from my {card} to Apple Pay for future orders?", "remove old card, add new one",
         "I would like to set a different default card for my subscription.")),
    "report_damaged_item": _T(
        ("My {product} arrived broken.", "The box was crushed and the {product} inside is damaged. Order {order}.",
         "What do I do if an item arrives damaged?",
         "Unacceptable! Second time the {product} shows up smashed!", "damaged item {order}"),
        ("The screen on the {product} I received {date} is cracked.",
         "Unfortunately the {product} came with a big dent and scratches all over it.",
         "{product} delivered in pieces, order {order}")),
    "billing_question": _T(
        ("Why was I charged {amount} on {date}?", "I see two charges for order {order}, can you explain?",
         "Can you send me an invoice for order {order}?",
         "You billed me {amount} for something I never ordered!", "question about my bill from {date}"),
        ("There's a charge of {amount} on my statement I don't recognise.",
         "does the {amount} include tax and shipping?",
         "Could you please clarify the fees on my last invoice?")),
    "close_account": _T(
        ("How do I delete my account?", "Please close my account registered to {email}.",
         "I want to permanently remove all my data and close my account.",
         "I'm done with this store. Delete my account today!", "close account {email}"),
        ("Is there a way to deactivate my profile for good?",
         "Kindly terminate the account linked to {email} and confirm by email.",
         "stop everything and erase my user account")),
    "contact_human_agent": _T(
        ("Can I talk to a real person?", "Please connect me with a human agent.",
         "I've been chatting with this bot for {minutes} minutes, get me a human!",
         "What's your customer service phone number?", "human agent please, about {order}"),
        ("Is there a live representative available right now?",
         "transfer me to someone who can actually help",
         "I would prefer to speak with a member of your support staff about order {order}.")),
    "apply_discount_code": _T(
        ("How do I use the promo code {code}?", "Please apply discount code {code} to order {order}.",
         "The code {code} says it's invalid, but it doesn't expire until {date}.",
         "Your coupon {code} is a scam, it NEVER works!", "promo code {code} not working"),
        ("Forgot to enter {code} at checkout, can you still take it off my order?",
         "Is {code} valid on sale items like the {product}?", "where do i type in a voucher")),
    "product_availability": _T(
        ("Is the {product} in stock?", "When will the {product} be available again?",
         "Do you have the {product} in {size}?",
         "The {product} has been sold out for weeks. Are you ever restocking it?!",
         "any {product} left in {size}"),
        ("Can you notify me when the {product} comes back?",
         "Will you carry the {product} in {size} next season?",
         "Is the {product} ready for pickup at your {city} store?")),
    "exchange_item": _T(
        ("Can I exchange the {product} for a different size?", "I'd like to swap my {product} for {size}.",
         "How do exchanges work for order {order}?",
         "Wrong size AGAIN. Exchange the {product} for {size} right now!", "exchange {order} for {size}"),
        ("The {product} doesn't fit, could I trade it in for {size}?",
         "is it possible to get a different colour of the {product} instead",
         "Please send me {size} of the {product} in place of the one I got.")),
    "unsubscribe_newsletter": _T(
        ("How do I stop getting marketing emails?", "Please unsubscribe {email} from your newsletter.",
         "I keep getting promo emails even after unsubscribing. Stop spamming me!",
         "Remove me from your mailing list.", "unsubscribe {email}"),
        ("Can you opt me out of all promotional messages sent to {email}?",
         "too many emails from you guys, make it stop",
         "I would like to no longer receive your weekly deals.")),
})

INTENTS: tuple[str, ...] = tuple(TEMPLATES)

_PRODUCTS = ("wireless earbuds", "running shoes", "coffee grinder", "yoga mat", "phone case", "desk lamp",
             "air fryer", "hiking backpack", "smart watch", "winter jacket", "blender", "gaming mouse",
             "bluetooth speaker", "office chair", "electric toothbrush", "water bottle", "laptop stand")
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
           "October", "November", "December")
_RELATIVE_DATES = ("yesterday", "last week", "last Monday", "two weeks ago", "3 days ago", "last month")
_CITIES = ("Denver", "Austin", "Portland", "Chicago", "Boston", "Seattle", "Atlanta", "Phoenix")
_STREETS = ("Maple", "Oak", "Pine", "Cedar", "Elm", "Lake", "Hill", "Park")
_NAMES = ("jsmith", "maria.g", "alex", "kim.lee", "sam_r", "dana", "omar.k", "lucy")
_DOMAINS = ("gmail.com", "yahoo.com", "outlook.com", "example.org")
_SIZES = ("a small", "a medium", "a large", "an XL", "size 8", "size 10", "size 42", "the blue one")
_CODES = ("SAVE", "WELCOME", "SPRING", "VIP", "FLASH", "HOLIDAY")

_SLOTS: dict[str, Callable[[random.Random], str]] = {
    "order": lambda r: f"{'#' if r.random() < 0.7 else ''}{r.choice('ABCKMZ')}{r.randint(10000, 99999)}",
    "product": lambda r: r.choice(_PRODUCTS),
    "date": lambda r: (r.choice(_RELATIVE_DATES) if r.random() < 0.5
                       else f"{r.choice(_MONTHS)} {r.randint(1, 28)}"),
    "amount": lambda r: f"${r.randint(5, 499)}.{r.randint(0, 99):02d}",
    "code": lambda r: f"{r.choice(_CODES)}{r.choice((5, 10, 15, 20, 25, 30, 50))}",
    "email": lambda r: f"{r.choice(_NAMES)}{r.randint(1, 99)}@{r.choice(_DOMAINS)}",
    "address": lambda r: (f"{r.randint(1, 9999)} {r.choice(_STREETS)} "
                          f"{r.choice(('St', 'Ave', 'Rd', 'Blvd'))}, {r.choice(_CITIES)}"),
    "city": lambda r: r.choice(_CITIES),
    "card": lambda r: f"{r.choice(('Visa', 'Mastercard', 'Amex', 'card'))} ending in {r.randint(0, 9999):04d}",
    "size": lambda r: r.choice(_SIZES),
    "minutes": lambda r: str(r.randint(5, 95)),
}

# Empty strings are repeated so that most messages carry no greeting/sign-off.
_PREFIXES = ("",) * 6 + ("hi, ", "hello, ", "hey ", "Hi there. ", "Good morning, ", "excuse me, ", "um ")
_SUFFIXES = ("",) * 6 + (" thanks", " Thank you!", " pls", " asap", " ty", " Thanks in advance.")

# Typos only touch plain words so identifiers (order numbers, codes) stay intact.
_TYPO_WORD = re.compile(r"[A-Za-z]{4,}")


class _Record(NamedTuple):
    text: str
    label: str
    split: str
    template: str
    clean_text: str  # text before typo injection


def _normalise(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9]+", " ", text.lower()).split())


@functools.lru_cache(maxsize=None)
def _fields(template: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(f for _, f, _, _ in string.Formatter().parse(template) if f))


def _render(template: str, rng: random.Random) -> str:
    body = template.format(**{name: _SLOTS[name](rng) for name in _fields(template)})
    r = rng.random()
    if r < 0.15:
        body = body.rstrip(".!?")
    elif r < 0.22:
        body = re.sub(r"([?!])$", r"\1\1", body)
    if rng.random() < 0.1:
        body = body.replace(",", "")
    prefix, suffix = rng.choice(_PREFIXES), rng.choice(_SUFFIXES)
    if prefix and not re.match(r"I\b", body):
        body = body[:1].lower() + body[1:]
    text = prefix + body + suffix
    r = rng.random()
    if r < 0.2:
        text = text.lower()
    elif r < 0.23:
        text = text.upper()
    return text


def _typo_word(word: str, rng: random.Random) -> str:
    """Return ``word`` with one swap/drop/duplicate typo; the result always differs."""
    op = rng.choice(("swap", "drop", "duplicate"))
    if op == "swap":
        spots = [i for i in range(len(word) - 1) if word[i] != word[i + 1]]
        if spots:
            i = rng.choice(spots)
            return word[:i] + word[i + 1] + word[i] + word[i + 2:]
        op = "duplicate"  # swapping identical letters would be a no-op
    if op == "drop" and len(word) > 1:
        i = rng.randrange(1, len(word))  # people rarely mistype the first letter
        return word[:i] + word[i + 1:]
    i = rng.randrange(len(word))
    return word[:i] + word[i] + word[i:]


def _inject_typos(text: str, rng: random.Random) -> str:
    spans = [m.span() for m in _TYPO_WORD.finditer(text)]
    if not spans:
        return text
    k = min(len(spans), 1 if rng.random() < 0.7 else 2)
    # Right-to-left so that earlier spans keep their offsets.
    for start, end in sorted(rng.sample(spans, k), reverse=True):
        text = text[:start] + _typo_word(text[start:end], rng) + text[end:]
    return text


def _generate(seed: int, train_per_intent: int, test_per_intent: int,
              templates: Mapping[str, IntentTemplates] | None = None) -> list[_Record]:
    """Like :func:`generate_demo_dataset` but keeps the template and pre-typo text of each record."""
    templates = TEMPLATES if templates is None else templates
    for name, value in (("train_per_intent", train_per_intent), ("test_per_intent", test_per_intent)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    rng = random.Random(seed)
    # One set across both splits and all intents: also keeps a text from carrying two labels.
    seen: set[str] = set()
    out: list[_Record] = []
    for split, count in (("train", train_per_intent), ("test", test_per_intent)):
        records: list[_Record] = []
        for label, intent in templates.items():
            pool = intent.train_templates if split == "train" else intent.test_templates
            if count and not pool:
                raise ValueError(f"intent {label!r} has no {split} templates")
            made, attempts, limit = 0, 0, 100 + 50 * count
            # Rotating through a seeded order covers every template even for small counts;
            # retries after a duplicate pick at random so one exhausted template cannot stall.
            order, retry = rng.sample(pool, len(pool)), False
            while made < count:
                if attempts >= limit:
                    raise ValueError(
                        f"could not generate {count} unique {split} texts for intent {label!r} "
                        f"(got {made} after {attempts} attempts); lower {split}_per_intent")
                attempts += 1
                template = rng.choice(pool) if retry else order[made % len(order)]
                retry = True
                clean = _render(template, rng)
                text = _inject_typos(clean, rng) if rng.random() < TYPO_RECORD_PROB else clean
                key = _normalise(text)
                if not key or len(text) > MAX_TEXT_LEN or not text.isascii() or key in seen:
                    continue
                seen.add(key)
                made, retry = made + 1, False
                records.append(_Record(text, label, split, template, clean))
        rng.shuffle(records)
        out.extend(records)
    return out


def generate_demo_dataset(seed: int = 0, train_per_intent: int = 40, test_per_intent: int = 10) -> list[dict]:
    """Generate the demo intent-classification dataset.

    Returns ``{"text", "label", "split"}`` records: all ``"train"`` records first,
    then all ``"test"`` records, each split in a seeded-shuffled order, with exactly
    ``train_per_intent``/``test_per_intent`` records per intent in :data:`INTENTS`.
    Test records come only from test templates; texts are unique within a split and
    no text (after normalising case, whitespace and punctuation) appears in both.
    The same ``seed`` always gives the same output.

    Raises ValueError for negative counts or when a count cannot be reached
    with unique texts.
    """
    return [{"text": r.text, "label": r.label, "split": r.split}
            for r in _generate(seed, train_per_intent, test_per_intent)]
