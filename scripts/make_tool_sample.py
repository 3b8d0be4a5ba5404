#!/usr/bin/env python3
"""Make the bundled tool-use SFT sample ``sample_tools.jsonl`` and a ShareGPT test fixture.

Output
------
``src/largeforge/resources/data/sample_tools.jsonl``: 400 conversations in the OpenAI chat
format, JSON Lines (UTF-8), one object per line::

    {"tools": [{"type": "function", "function": {...}}, ...],
     "messages": [{"role": "system", ...}?, {"role": "user", ...},
                  {"role": "assistant", "content": null, "tool_calls": [...]},
                  {"role": "tool", "tool_call_id": ..., "name": ..., "content": ...}, ...]}

Mix: 220 rows (55%) are one request -> one call (the row ends with the assistant's
``tool_calls`` turn); 60 (15%) are the full loop (call -> tool result -> final answer that
uses the result); 32 (8%) make two parallel calls in one assistant turn (half of them are
answered by a tool message each and a final answer, half end at the calls); 88 (22%) need no
tool (greetings, arithmetic, definitions, translations, short poems, general knowledge) and are
answered in plain text while tools are still offered. 40 rows (10%) start with a short system
message.

Tools: the five tools of the held-out evaluation set (``get_weather``, ``convert_currency``,
``search_docs``, ``create_reminder``, ``get_time``), read from the first line of
``src/largeforge/resources/eval/tools_eval.jsonl`` and written byte-for-byte as they are there,
plus three tools of this file (``get_stock_price``, ``send_email``, ``calculate_tip``). Each
row offers 3 to 6 of them in a shuffled order, always including the ones it calls; about a
fifth of the rows offer the five evaluation tools (plus the extra tool they call, if any), some
of them in the evaluation file's own order.

Every request is written by the templates below (at least 8 phrasings per tool) with values
(cities, currency pairs and amounts, queries, reminders, times, time zones) that differ from
the evaluation set's, and every argument comes from the user's words. The checks at the end of
``main`` assert it: arguments satisfy each tool's schema (a small checker for the keywords the
schemas use, cross-checked with ``largeforge.domain.schema_check`` when ``src/`` is
importable), calls name offered tools, tool messages answer a call of the assistant turn just
before, no user message repeats or equals an evaluation prompt, and no value of an evaluation
call is reused.

``tests/fixtures/tools_sharegpt.jsonl``: 12 rows in LLaMA-Factory's ShareGPT function-calling
convention (``human`` / ``function_call`` / ``observation`` / ``gpt`` turns; ``tools`` is JSON
text in 10 rows, of bare ``{name, description, parameters}`` functions as LLaMA-Factory writes
it or of OpenAI tools, and a JSON list in 2; 3 rows end at the function call, one makes two
calls at once (a list of calls, answered by a JSON list of results), two need no tool).

Determinism
-----------
All choices come from ``random.Random`` with fixed seeds (``SEED``); nothing depends on set
order or ``PYTHONHASHSEED``, so every run writes byte-identical files. Regenerate with::

    python scripts/make_tool_sample.py          # (re)write both files
    python scripts/make_tool_sample.py --check  # verify the committed files are current

Standard library only.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import string
import sys
from collections import Counter
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
EVAL_PATH = REPO_ROOT / "src" / "largeforge" / "resources" / "eval" / "tools_eval.jsonl"
OUTPUT_PATH = REPO_ROOT / "src" / "largeforge" / "resources" / "data" / "sample_tools.jsonl"
FIXTURE_PATH = REPO_ROOT / "tests" / "fixtures" / "tools_sharegpt.jsonl"

SEED = 20250117
FIXTURE_SEED = SEED + 1

EVAL_TOOL_NAMES = ("get_weather", "convert_currency", "search_docs", "create_reminder", "get_time")

# How many rows of each kind (400 in all).
N_SINGLE, N_LOOP, N_PARALLEL, N_NO_TOOL = 220, 60, 32, 88
N_SYSTEM = 40
ALL_EVAL_TOOLS_SHARE = 0.2  # rows that offer exactly the five evaluation tools (+ a called extra)

# ---------------------------------------------------------------------------------------------
# The three extra tools (the five evaluation tools are read from tools_eval.jsonl)
# ---------------------------------------------------------------------------------------------

EXTRA_TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_stock_price",
            "description": "Latest trading price of a stock.",
            "parameters": {
                "type": "object",
                "properties": {
                    "symbol": {
                        "type": "string",
                        "pattern": "^[A-Z]{1,5}$",
                        "description": "Ticker symbol, e.g. MSFT",
                    }
                },
                "required": ["symbol"],
                "additionalProperties": False,
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "send_email",
            "description": "Send an email.",
            "parameters": {
                "type": "object",
                "properties": {
                    "to": {
                        "type": "string",
                        "pattern": "^[^@\\s]+@[^@\\s]+\\.[a-z]{2,}$",
                        "description": "Recipient email address",
                    },
                    "subject": {"type": "string"},
                    "body": {"type": "string"},
                },
                "required": ["to", "subject", "body"],
                "additionalProperties": False,
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "calculate_tip",
            "description": "Compute the tip and the total for a restaurant bill.",
            "parameters": {
                "type": "object",
                "properties": {
                    "bill": {"type": "number", "minimum": 0, "description": "Bill before tip"},
                    "percent": {"type": "integer", "minimum": 0, "maximum": 100},
                },
                "required": ["bill", "percent"],
                "additionalProperties": False,
            },
        },
    },
]
EXTRA_TOOL_NAMES = tuple(t["function"]["name"] for t in EXTRA_TOOLS)
ALLOWED_SCHEMA_KEYWORDS = {
    "type", "properties", "required", "additionalProperties", "enum", "minimum", "maximum",
    "pattern", "description",
}  # fmt: skip

# ---------------------------------------------------------------------------------------------
# Values (all different from the evaluation set's; `check_values_differ` asserts it)
# ---------------------------------------------------------------------------------------------

CITIES = [
    "Seattle", "Denver", "Boston", "Phoenix", "Atlanta", "Dublin", "Vienna", "Prague",
    "Warsaw", "Helsinki", "Stockholm", "Copenhagen", "Amsterdam", "Brussels", "Zurich",
    "Athens", "Istanbul", "Mumbai", "Delhi", "Bangkok", "Singapore", "Seoul", "Osaka",
    "Beijing", "Shanghai", "Manila", "Jakarta", "Melbourne", "Auckland", "Lima", "Santiago",
    "Buenos Aires", "Mexico City", "Vancouver", "Montreal", "Cape Town", "Lagos", "Accra",
    "Marrakesh", "Dubai", "Doha", "Reykjavik", "Edinburgh", "Krakow", "Hanoi", "Kyoto",
    "Perth", "Houston", "San Diego", "Portland", "Minneapolis", "New Orleans", "Honolulu",
    "Anchorage", "Barcelona", "Munich", "Lyon", "Porto", "Florence", "Budapest",
]  # fmt: skip

# Celsius ranges for plausible results (other cities: 2..30).
COLD_CITIES = {
    "Reykjavik", "Anchorage", "Helsinki", "Stockholm", "Minneapolis", "Krakow", "Warsaw",
    "Montreal", "Edinburgh", "Beijing", "Seoul", "Copenhagen", "Prague", "Vienna", "Munich",
}  # fmt: skip
HOT_CITIES = {
    "Singapore", "Bangkok", "Manila", "Jakarta", "Mumbai", "Lagos", "Accra", "Dubai", "Doha",
    "Honolulu", "Hanoi", "Delhi", "Phoenix", "Houston", "Marrakesh",
}  # fmt: skip

UNIT_WORDS = {
    "celsius": ["celsius", "Celsius", "°C", "degrees Celsius"],
    "fahrenheit": ["fahrenheit", "Fahrenheit", "°F", "degrees Fahrenheit"],
}

COLD_CONDITIONS = ["light snow", "overcast", "clear", "foggy", "windy", "partly cloudy"]
WARM_CONDITIONS = [
    "sunny", "partly cloudy", "overcast", "light rain", "showers", "clear", "windy",
    "thunderstorms",
]  # fmt: skip
CONDITION_PHRASES = {
    "sunny": "sunny skies", "partly cloudy": "partly cloudy skies",
    "overcast": "overcast skies", "light rain": "light rain", "showers": "passing showers",
    "clear": "clear skies", "windy": "strong winds", "foggy": "fog",
    "light snow": "light snow", "thunderstorms": "thunderstorms",
}  # fmt: skip

# ISO 4217 code -> (plural name, units per US dollar; approximate, for plausible results).
CURRENCIES = {
    "USD": ("US dollars", 1.0), "EUR": ("euros", 0.92), "GBP": ("British pounds", 0.79),
    "JPY": ("Japanese yen", 150.0), "CHF": ("Swiss francs", 0.88),
    "CAD": ("Canadian dollars", 1.36), "AUD": ("Australian dollars", 1.52),
    "NZD": ("New Zealand dollars", 1.65), "INR": ("Indian rupees", 83.2),
    "SEK": ("Swedish kronor", 10.4), "NOK": ("Norwegian kroner", 10.6),
    "DKK": ("Danish kroner", 6.87), "PLN": ("Polish zloty", 3.98),
    "MXN": ("Mexican pesos", 17.1), "BRL": ("Brazilian reais", 4.97),
    "SGD": ("Singapore dollars", 1.34), "HKD": ("Hong Kong dollars", 7.82),
    "KRW": ("South Korean won", 1330.0), "CNY": ("Chinese yuan", 7.19),
    "ZAR": ("South African rand", 18.7), "TRY": ("Turkish lira", 32.0),
}  # fmt: skip
AMOUNTS = [
    15, 20, 35, 60, 80, 120, 150, 300, 450, 700, 1200, 2500, 9.99, 14.5, 27.8, 64.25, 88.4,
    199.95, 3.75, 540, 8000, 36, 18.6, 990, 125.5,
]  # fmt: skip

# query -> pages it finds (title, url)
DOCS = {
    "collections Counter": [
        ("collections.Counter", "https://docs.python.org/3/library/collections.html#collections.Counter"),
    ],
    "functools lru_cache": [
        ("functools.lru_cache", "https://docs.python.org/3/library/functools.html#functools.lru_cache"),
        ("functools.cache", "https://docs.python.org/3/library/functools.html#functools.cache"),
    ],
    "re named groups": [
        ("Regular Expression HOWTO: Non-capturing and Named Groups", "https://docs.python.org/3/howto/regex.html#non-capturing-and-named-groups"),
        ("re: Regular Expression Syntax", "https://docs.python.org/3/library/re.html#regular-expression-syntax"),
    ],
    "subprocess run timeout": [
        ("subprocess.run", "https://docs.python.org/3/library/subprocess.html#subprocess.run"),
        ("subprocess.TimeoutExpired", "https://docs.python.org/3/library/subprocess.html#subprocess.TimeoutExpired"),
    ],
    "datetime timezone": [
        ("datetime: timezone Objects", "https://docs.python.org/3/library/datetime.html#timezone-objects"),
        ("zoneinfo: IANA time zone support", "https://docs.python.org/3/library/zoneinfo.html"),
    ],
    "argparse subcommands": [
        ("argparse: Sub-commands", "https://docs.python.org/3/library/argparse.html#sub-commands"),
    ],
    "logging configuration": [
        ("Logging HOWTO: Configuring Logging", "https://docs.python.org/3/howto/logging.html#configuring-logging"),
        ("logging.config: Logging configuration", "https://docs.python.org/3/library/logging.config.html"),
    ],
    "enum auto": [
        ("enum.auto", "https://docs.python.org/3/library/enum.html#enum.auto"),
    ],
    "csv DictReader": [
        ("csv.DictReader", "https://docs.python.org/3/library/csv.html#csv.DictReader"),
    ],
    "threading Lock": [
        ("threading: Lock Objects", "https://docs.python.org/3/library/threading.html#lock-objects"),
        ("threading: RLock Objects", "https://docs.python.org/3/library/threading.html#rlock-objects"),
    ],
    "os environ": [
        ("os.environ", "https://docs.python.org/3/library/os.html#os.environ"),
        ("os.getenv", "https://docs.python.org/3/library/os.html#os.getenv"),
    ],
    "shutil copytree": [
        ("shutil.copytree", "https://docs.python.org/3/library/shutil.html#shutil.copytree"),
    ],
    "zipfile extract": [
        ("ZipFile.extractall", "https://docs.python.org/3/library/zipfile.html#zipfile.ZipFile.extractall"),
        ("ZipFile.extract", "https://docs.python.org/3/library/zipfile.html#zipfile.ZipFile.extract"),
    ],
    "unittest mock patch": [
        ("unittest.mock: patch", "https://docs.python.org/3/library/unittest.mock.html#patch"),
        ("unittest.mock: Where to patch", "https://docs.python.org/3/library/unittest.mock.html#where-to-patch"),
    ],
    "heapq nlargest": [
        ("heapq.nlargest", "https://docs.python.org/3/library/heapq.html#heapq.nlargest"),
    ],
    "bisect insort": [
        ("bisect.insort", "https://docs.python.org/3/library/bisect.html#bisect.insort"),
    ],
    "decimal rounding": [
        ("decimal: Rounding modes", "https://docs.python.org/3/library/decimal.html#rounding-modes"),
        ("Decimal.quantize", "https://docs.python.org/3/library/decimal.html#decimal.Decimal.quantize"),
    ],
    "sqlite3 executemany": [
        ("sqlite3.Cursor.executemany", "https://docs.python.org/3/library/sqlite3.html#sqlite3.Cursor.executemany"),
    ],
    "textwrap dedent": [
        ("textwrap.dedent", "https://docs.python.org/3/library/textwrap.html#textwrap.dedent"),
    ],
    "tempfile NamedTemporaryFile": [
        ("tempfile.NamedTemporaryFile", "https://docs.python.org/3/library/tempfile.html#tempfile.NamedTemporaryFile"),
    ],
    "struct pack": [
        ("struct.pack", "https://docs.python.org/3/library/struct.html#struct.pack"),
        ("struct: Format Strings", "https://docs.python.org/3/library/struct.html#format-strings"),
    ],
    "random sample": [
        ("random.sample", "https://docs.python.org/3/library/random.html#random.sample"),
    ],
    "statistics median": [
        ("statistics.median", "https://docs.python.org/3/library/statistics.html#statistics.median"),
    ],
    "urllib parse quote": [
        ("urllib.parse.quote", "https://docs.python.org/3/library/urllib.parse.html#urllib.parse.quote"),
    ],
    "hashlib sha256": [
        ("hashlib: Secure hashes and message digests", "https://docs.python.org/3/library/hashlib.html"),
    ],
    "string Template": [
        ("string: Template strings", "https://docs.python.org/3/library/string.html#template-strings"),
    ],
    "abc abstractmethod": [
        ("abc.abstractmethod", "https://docs.python.org/3/library/abc.html#abc.abstractmethod"),
    ],
    "asyncio gather": [
        ("asyncio.gather", "https://docs.python.org/3/library/asyncio-task.html#asyncio.gather"),
        ("asyncio.TaskGroup", "https://docs.python.org/3/library/asyncio-task.html#asyncio.TaskGroup"),
    ],
    "pickle protocol": [
        ("pickle: Data stream format", "https://docs.python.org/3/library/pickle.html#data-stream-format"),
    ],
    "match statement": [
        ("The match statement", "https://docs.python.org/3/reference/compound_stmts.html#the-match-statement"),
        ("Tutorial: match Statements", "https://docs.python.org/3/tutorial/controlflow.html#match-statements"),
    ],
    "walrus operator": [
        ("Assignment expressions", "https://docs.python.org/3/reference/expressions.html#assignment-expressions"),
    ],
    "generator expressions": [
        ("Generator expressions", "https://docs.python.org/3/reference/expressions.html#generator-expressions"),
        ("Tutorial: Generator Expressions", "https://docs.python.org/3/tutorial/classes.html#generator-expressions"),
    ],
    "exception groups": [
        ("ExceptionGroup", "https://docs.python.org/3/library/exceptions.html#ExceptionGroup"),
        ("Tutorial: Raising and Handling Multiple Unrelated Exceptions", "https://docs.python.org/3/tutorial/errors.html#raising-and-handling-multiple-unrelated-exceptions"),
    ],
    "venv creation": [
        ("venv: Creation of virtual environments", "https://docs.python.org/3/library/venv.html"),
    ],
    "sorted key function": [
        ("Sorting Techniques: Key Functions", "https://docs.python.org/3/howto/sorting.html#key-functions"),
        ("sorted()", "https://docs.python.org/3/library/functions.html#sorted"),
    ],
    "math isclose": [
        ("math.isclose", "https://docs.python.org/3/library/math.html#math.isclose"),
    ],
    "operator itemgetter": [
        ("operator.itemgetter", "https://docs.python.org/3/library/operator.html#operator.itemgetter"),
    ],
    "copy deepcopy": [
        ("copy: Shallow and deep copy operations", "https://docs.python.org/3/library/copy.html"),
    ],
    "time perf_counter": [
        ("time.perf_counter", "https://docs.python.org/3/library/time.html#time.perf_counter"),
    ],
    "secrets token_hex": [
        ("secrets.token_hex", "https://docs.python.org/3/library/secrets.html#secrets.token_hex"),
    ],
    "glob recursive": [
        ("glob.glob", "https://docs.python.org/3/library/glob.html#glob.glob"),
    ],
}  # fmt: skip
MAX_RESULTS_CHOICES = [1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 15, 20]

REMINDER_TEXTS = [
    "feed the cat", "book a dentist appointment", "renew my passport", "pay the electricity bill",
    "stretch my legs", "send the invoice to Laura", "buy oat milk", "back up my laptop",
    "check the oven", "move the car", "call the plumber", "review the pull request",
    "take my vitamins", "start the laundry", "reply to Sam's email", "charge my headphones",
    "pick up the dry cleaning", "lock the back door", "prepare the slides for Monday",
    "defrost the chicken", "walk the dog", "order a birthday cake for Noor",
    "drink a glass of water", "log my hours", "cancel the gym trial", "call grandpa",
    "join the design review", "check in for my flight", "return the library books",
    "book the train tickets",
]  # fmt: skip

# IANA zone -> a city that names it in a request (None: only the zone name is used)
TIMEZONES = {
    "Europe/Vienna": "Vienna", "Europe/Madrid": None, "Europe/Rome": None,
    "Asia/Kolkata": "Kolkata", "Asia/Singapore": "Singapore", "Asia/Seoul": "Seoul",
    "Asia/Shanghai": "Shanghai", "Asia/Dubai": "Dubai", "America/Los_Angeles": "Los Angeles",
    "America/Denver": "Denver", "America/Sao_Paulo": "São Paulo",
    "America/Mexico_City": "Mexico City", "America/Toronto": None,
    "Pacific/Auckland": "Auckland", "Africa/Lagos": "Lagos",
    "Africa/Johannesburg": "Johannesburg", "Europe/Istanbul": "Istanbul",
    "Asia/Bangkok": "Bangkok", "Asia/Jakarta": "Jakarta", "Europe/Stockholm": "Stockholm",
    "Europe/Warsaw": "Warsaw", "America/Anchorage": "Anchorage",
    "Pacific/Honolulu": "Honolulu", "Atlantic/Reykjavik": "Reykjavik",
    "Asia/Manila": "Manila", "Europe/Athens": "Athens", "Europe/Helsinki": "Helsinki",
    "America/Vancouver": "Vancouver", "Europe/Dublin": "Dublin",
    "Asia/Hong_Kong": "Hong Kong", "Europe/Amsterdam": "Amsterdam",
    "America/Lima": "Lima", "Europe/Berlin": None, "America/Chicago": None,
}  # fmt: skip

# Standard-time UTC offsets in minutes, so that two results of one turn agree.
UTC_OFFSETS = {
    "Europe/Vienna": 60, "Europe/Madrid": 60, "Europe/Rome": 60, "Asia/Kolkata": 330,
    "Asia/Singapore": 480, "Asia/Seoul": 540, "Asia/Shanghai": 480, "Asia/Dubai": 240,
    "America/Los_Angeles": -480, "America/Denver": -420, "America/Sao_Paulo": -180,
    "America/Mexico_City": -360, "America/Toronto": -300, "Pacific/Auckland": 720,
    "Africa/Lagos": 60, "Africa/Johannesburg": 120, "Europe/Istanbul": 180,
    "Asia/Bangkok": 420, "Asia/Jakarta": 420, "Europe/Stockholm": 60, "Europe/Warsaw": 60,
    "America/Anchorage": -540, "Pacific/Honolulu": -600, "Atlantic/Reykjavik": 0,
    "Asia/Manila": 480, "Europe/Athens": 120, "Europe/Helsinki": 120,
    "America/Vancouver": -480, "Europe/Dublin": 0, "Asia/Hong_Kong": 480,
    "Europe/Amsterdam": 60, "America/Lima": -300, "Europe/Berlin": 60, "America/Chicago": -360,
}  # fmt: skip
assert set(UTC_OFFSETS) == set(TIMEZONES)

COMPANIES = {
    "AAPL": "Apple", "MSFT": "Microsoft", "NVDA": "Nvidia", "AMZN": "Amazon",
    "GOOGL": "Alphabet", "TSLA": "Tesla", "META": "Meta", "NFLX": "Netflix", "IBM": "IBM",
    "INTC": "Intel", "AMD": "AMD", "ORCL": "Oracle", "KO": "Coca-Cola", "PEP": "PepsiCo",
    "DIS": "Disney", "NKE": "Nike", "JPM": "JPMorgan Chase", "V": "Visa", "WMT": "Walmart",
    "SBUX": "Starbucks", "ADBE": "Adobe", "CSCO": "Cisco", "UBER": "Uber", "SHOP": "Shopify",
}  # fmt: skip
# Rough share prices in USD (results vary by up to 10% around them).
PRICES = {
    "AAPL": 190, "MSFT": 410, "NVDA": 120, "AMZN": 180, "GOOGL": 165, "TSLA": 240,
    "META": 480, "NFLX": 620, "IBM": 185, "INTC": 30, "AMD": 160, "ORCL": 130, "KO": 62,
    "PEP": 170, "DIS": 100, "NKE": 90, "JPM": 200, "V": 275, "WMT": 68, "SBUX": 85,
    "ADBE": 500, "CSCO": 48, "UBER": 70, "SHOP": 75,
}  # fmt: skip

RECIPIENTS = [
    "priya@example.com", "tom.becker@example.org", "support@example.net", "hr@example.com",
    "jordan.lee@example.com", "m.rossi@example.it", "team-alpha@example.org",
    "grace@example.co.uk", "landlord@example.com", "coach.diaz@example.net",
    "ana.silva@example.com", "kenji@example.jp",
]  # fmt: skip
EMAILS = [
    ("Lunch moved", "Lunch is moved to 1 pm tomorrow."),
    ("Running late", "I'll be about 15 minutes late to our meeting."),
    ("Thanks!", "Thank you for your help with the move last weekend."),
    ("Team offsite", "The offsite is confirmed for Friday at the lakeside venue."),
    ("Password reset", "I can't log in to the portal. Could you reset my password?"),
    ("Book club", "This month we're reading The Left Hand of Darkness."),
    ("Weekly report", "The weekly report is ready for review on the shared drive."),
    ("Dinner on Saturday", "Are you free for dinner on Saturday at 7?"),
    ("Vacation request", "I'd like to take vacation from 12 to 16 August."),
    ("Leaking tap", "The kitchen tap is leaking again. Could someone take a look this week?"),
    ("Happy birthday", "Happy birthday! Hope you have a wonderful day."),
    ("Meeting notes", "The notes from today's meeting are in the team folder."),
    ("Order 5531", "Could you tell me when order 5531 will ship?"),
    ("Quick question", "Do you have time for a short call tomorrow morning?"),
    ("Practice cancelled", "Practice is cancelled tonight because of the storm."),
    ("New address", "My new address is 14 Elm Street, apartment 3B."),
]

TIP_PERCENTS = [10, 12, 15, 18, 20, 22, 25]

# ---------------------------------------------------------------------------------------------
# Request templates (at least 8 per tool)
# ---------------------------------------------------------------------------------------------

WEATHER_TEMPLATES = [
    "How warm is it in {city} at the moment? Please answer in {u}.",
    "What's the current weather in {city}, in {u}?",
    "Check the weather for {city} and report the temperature in {u}.",
    "Is it cold in {city} today? Temperature in {u}, please.",
    "I'm flying to {city} tonight. What are the conditions there now, in {u}?",
    "weather in {city} rn? {u} pls",
    "Could you tell me the current temperature in {city}? I'd like it in {u}.",
    "Tell me what the weather's doing in {city} right now, using {u}.",
    "Should I bring a jacket in {city} today? Show the temperature in {u}.",
    "Hey, what's it like outside in {city}? Use {u}.",
    "Current conditions for {city} in {u}, please.",
    "My sister lives in {city}. How's the weather there today? Please use {u}.",
]
CURRENCY_TEMPLATES = [
    "How much is {amt} {f} in {t}?",
    "What's {amt} {fn} worth in {tn} today?",
    "Please change {amt} {f} into {t}.",
    "I have {amt} {fn}. How many {tn} is that?",
    "Exchange {amt} {f} to {t} for me, please.",
    "Can you tell me what {amt} {f} comes to in {t}?",
    "quick one: {amt} {f} -> {t}?",
    "I'm paying an invoice of {amt} {fn}. What is that in {tn}?",
    "Could you work out how many {tn} I'd get for {amt} {fn}?",
    "Turn {amt} {f} into {t}, please.",
    "My hotel costs {amt} {f} a night. How much is that in {t}?",
]
SEARCH_TEMPLATES = [
    "Look up '{q}' in the Python documentation and show me {n} results.",
    "Find Python docs pages about {q}; limit it to {n} results.",
    "Can you search the Python docs for {q}? The top {n} hits are enough.",
    "I'm stuck with {q}. Search the Python documentation and give me up to {n} results.",
    "Pull up the {n} most relevant Python doc pages on {q}.",
    "python docs: {q}, max {n} results",
    "Could you please find documentation on {q} in the Python docs? No more than {n} results.",
    'Search the official Python documentation for "{q}", {n} results max.',
    "Which Python doc pages cover {q}? Show at most {n}.",
    "I'd like to read about {q}. Fetch {n} matching pages from the Python docs.",
]
SEARCH_TEMPLATES_ONE = [  # max_results 1, said in words
    "Check the Python docs for {q} and show me just the top result.",
    "Find the single best Python documentation page on {q}.",
    "What's the one most relevant Python docs page about {q}?",
]
REMINDER_TEMPLATES = [
    "Set a reminder for {t} to {x}.",
    "Can you remind me at {t} to {x}?",
    "Please create a reminder: {x} at {t}.",
    "At {t}, remind me to {x}.",
    "Don't let me forget to {x}. Ping me at {t}.",
    "I need a nudge at {t} to {x}, thanks.",
    "remind me at {t} to {x} pls",
    "Could you set up a reminder to {x} at {t}? Much appreciated.",
    "Add a reminder at {t}: {x}.",
    "I keep forgetting to {x}. Set a reminder for {t}, please.",
]
TIME_TEMPLATES_ZONE = [  # {w} is the IANA zone name
    "What's the local time in {w} right now?",
    "Tell me the current time for the {w} zone.",
    "Can you check what time it is in {w}?",
    "What time is it over in {w}?",
    "I have a call with someone in {w}. What time is it there now?",
    "current time in {w}?",
    "Could you please look up the time in {w}?",
    "Get me the current local time, time zone {w}.",
]
TIME_TEMPLATES_CITY = [  # {w} is a city that names the zone
    "What time is it in {w} right now?",
    "Is it late in {w}? Tell me the time there.",
    "My friend is in {w}. What time is it for them?",
    "Can you check the local time in {w}?",
    "what's the time in {w}?",
    "I need to call a client in {w}. What's the time there at the moment?",
]
STOCK_TEMPLATES = [
    "What's the current price of {s}?",
    "How is {c} ({s}) trading right now?",
    "Get me a stock quote for {s}.",
    "Can you check the share price of {c}? The ticker is {s}.",
    "{s} price?",
    "I'm thinking of buying some {c} stock. What does {s} cost at the moment?",
    "Please look up the latest price for ticker {s}.",
    "Where is {s} trading today?",
    "Could you fetch the stock price for {s}, please?",
    "How much is one share of {c} ({s}) right now?",
]
EMAIL_TEMPLATES = [
    'Send an email to {to} with the subject "{s}" saying: {b}',
    "Email {to}. Subject: {s}. Body: {b}",
    "Can you write to {to}? Use the subject '{s}' and the message \"{b}\"",
    'Please email {to}, subject "{s}", message: "{b}"',
    'Shoot {to} an email titled "{s}": {b}',
    'I need to let {to} know something. Subject "{s}", and the text should be: {b}',
    "Could you send a message to {to} with the subject line '{s}'? The body is: {b}",
    "Send {to} an email. Title it '{s}' and write: {b}",
    "mail {to}: subject '{s}', body '{b}'",
]
TIP_TEMPLATES = [
    "What's a {p}% tip on a ${bill} bill?",
    "Calculate a {p} percent tip for {bill}.",
    "Our dinner came to {bill}. How much should we leave if we tip {p}%?",
    "Help me figure out the tip: the bill is {bill} and I want to give {p}%.",
    "tip {p}% on {bill}?",
    "Could you work out a {p}% gratuity on a {bill} check, please?",
    "The total at the cafe is ${bill}. What's a {p}% tip, and what do I pay in all?",
    "How much is the tip if I leave {p} percent on ${bill}?",
    "Please compute the tip for a bill of {bill} at {p}%.",
]

SYSTEM_PROMPTS = [
    "You are a helpful assistant.",
    "You are a helpful assistant with access to tools. Call a tool only when the request "
    "needs one.",
    "You are a concise assistant. Keep answers short.",
    "Answer briefly. Use the provided functions when they help.",
    "You are an assistant that can call functions. Do not guess values the user did not give.",
]

# ---------------------------------------------------------------------------------------------
# Requests that need no tool: (user, assistant); answers checked by hand
# ---------------------------------------------------------------------------------------------

NO_TOOL_QA = [
    # greetings and small talk
    ("Hi there!", "Hi! How can I help you today?"),
    ("Good morning!", "Good morning! What can I do for you?"),
    ("Hey, what's up?", "Not much, I'm here and ready to help. What do you need?"),
    ("Thank you so much for your help!",
     "You're very welcome! Let me know if there's anything else."),
    ("Thanks a lot, bye!", "You're welcome. Goodbye, and have a great day!"),
    ("Who are you?",
     "I'm an AI assistant. I can answer questions, help with writing and math, and use the "
     "tools available in this conversation when a task needs them."),
    ("What can you do?",
     "I can answer questions, explain concepts, help with writing and calculations, and use "
     "the tools offered here when a request needs live data or an action."),
    ("Good night!", "Good night! Sleep well."),
    ("Nice to meet you.", "Nice to meet you too! How can I help?"),
    ("Are you a human?", "No, I'm an AI assistant, but I'm happy to help however I can."),
    ("Can you help me with something?",
     "Of course! Tell me what you need and I'll do my best."),
    ("That's perfect, thanks.", "Glad it helped! Anything else?"),
    # definitions
    ("What does the Python keyword 'lambda' do? One sentence, please.",
     "`lambda` creates a small anonymous function from a single expression, for example "
     "`lambda x: x * 2`."),
    ("Explain what a dictionary is in Python.",
     "A dictionary (`dict`) is a mutable mapping from unique, hashable keys to values with "
     "fast lookup by key, for example `{\"apples\": 3, \"pears\": 5}`."),
    ("What is recursion?",
     "Recursion is when a function solves a problem by calling itself on smaller instances of "
     "the same problem until it reaches a base case."),
    ("Define photosynthesis briefly.",
     "Photosynthesis is the process by which plants, algae and some bacteria use light energy "
     "to turn carbon dioxide and water into glucose and oxygen."),
    ("What is an API?",
     "An API (application programming interface) is a defined set of rules that lets one "
     "piece of software request data or services from another."),
    ("What does HTTP stand for?", "HTTP stands for Hypertext Transfer Protocol."),
    ("What is a prime number?",
     "A prime number is a whole number greater than 1 whose only divisors are 1 and itself, "
     "such as 2, 3, 5, 7 and 11."),
    ("What's the difference between a list and a tuple in Python?",
     "A list is mutable (you can change, add or remove items), while a tuple is immutable "
     "once created; tuples of hashable items can also be dictionary keys."),
    ("What is inflation?",
     "Inflation is the general rise in prices over time, so each unit of money buys a little "
     "less than before."),
    ("In one sentence, what is machine learning?",
     "Machine learning is a branch of AI in which computers learn patterns from data to make "
     "predictions or decisions without being explicitly programmed for each case."),
    ("What does 'idempotent' mean?",
     "An operation is idempotent if doing it several times has the same effect as doing it "
     "once, like setting a value or an HTTP PUT request."),
    ("What is a noun?",
     "A noun is a word that names a person, place, thing or idea, such as 'teacher', 'city' "
     "or 'happiness'."),
    ("What does the `with` statement do in Python?",
     "It runs a block inside a context manager, which sets up a resource and guarantees its "
     "cleanup (for example closing a file) even if an error occurs."),
    ("What does JSON stand for?",
     "JSON stands for JavaScript Object Notation, a lightweight text format for structured "
     "data."),
    ("What's a haiku?",
     "A haiku is a short Japanese poem of three lines with a 5-7-5 syllable pattern, often "
     "about nature or a season."),
    # close to a tool's topic, but answered from knowledge
    ("What is a time zone?",
     "A time zone is a region that keeps the same standard time, usually written as an offset "
     "from Coordinated Universal Time (UTC), such as UTC+1."),
    ("What is an exchange rate?",
     "An exchange rate is the price of one currency in terms of another, for example how many "
     "euros one US dollar buys."),
    ("What is a stock ticker symbol?",
     "A ticker symbol is a short code that identifies a company's publicly traded shares, "
     "like MSFT for Microsoft."),
    ("How do I convert 25 °C to Fahrenheit by hand?",
     "Multiply by 9/5 and add 32: 25 × 9/5 + 32 = 77 °F."),
    ("What's the formula to turn Fahrenheit into Celsius?",
     "C = (F − 32) × 5/9. For example, 212 °F is (212 − 32) × 5/9 = 100 °C."),
    ("How many minutes are in 3 hours?", "There are 180 minutes in 3 hours."),
    ("What does USD stand for?",
     "USD is the ISO 4217 code for the United States dollar."),
    ("What's the currency of Japan?", "Japan's currency is the yen (JPY)."),
    ("How many hours ahead of UTC+2 is UTC+9?", "UTC+9 is 7 hours ahead of UTC+2."),
    # translations
    ("How do you say 'thank you' in French?", "'Thank you' in French is \"merci\"."),
    ("Translate 'good night' into German.", "\"Gute Nacht.\""),
    ("What is 'see you tomorrow' in Spanish?", "\"Hasta mañana.\""),
    ("Translate 'where is the train station?' into Italian.", "\"Dov'è la stazione?\""),
    ("How do I say 'I love you' in Portuguese?",
     "\"Eu te amo.\" (In Portugal you will also hear \"Amo-te.\")"),
    ("Translate 'cat' into Japanese.", "猫 (neko)."),
    ("What's 'happy birthday' in French?", "\"Joyeux anniversaire !\""),
    ("How do you say 'water' in German?", "\"Wasser.\""),
    ("Translate 'good luck' into Italian.", "\"Buona fortuna!\""),
    ("What's the Dutch word for 'bicycle'?", "\"Fiets.\""),
    ("Translate 'the weather is nice today' into French.", "\"Il fait beau aujourd'hui.\""),
    ("How do you say 'what time is it?' in Spanish?", "\"¿Qué hora es?\""),
    ("Translate 'How much does this cost?' into German.", "\"Wie viel kostet das?\""),
    # short poems (original)
    ("Write a haiku about the ocean.",
     "Waves fold into foam\nthe tide breathes in, then lets go\nsalt on the cool wind"),
    ("Write a short poem about coffee.",
     "Dark and warm, the morning cup,\nthe quiet hour that wakes me up;\none slow sip and the "
     "day can start,\nsteam rising like a sleepy heart."),
    ("Compose a haiku about snow.",
     "Soft snow on the roof\nthe whole street holds its breath now\nfootprints fill with white"),
    ("Write a two-line rhyme about cats.",
     "A cat will nap in any light,\nthen race the halls at dead of night."),
    ("Can you write a haiku about spring rain?",
     "Rain taps the window\ngreen shoots lift their heads to drink\nthe garden wakes up"),
    ("Write a four-line poem about the moon.",
     "The moon climbs slow above the hill,\na silver lamp, serene and still;\nit lends the night "
     "its borrowed light\nand walks the sky till morning's bright."),
    ("Give me a limerick about a programmer.",
     "There once was a coder named Lee\nwho debugged with a mug of green tea;\nwhen the tests "
     "all passed,\nhe cheered, \"Fixed at last!\"\nthen found one more bug on line three."),
    ("Write a short poem about mountains.",
     "Stone shoulders wrapped in cloud,\nthey stand where winds are loud;\npatient, old and "
     "grand,\nthey hold the sky above the land."),
    # general knowledge
    ("What is the capital of Australia?", "The capital of Australia is Canberra."),
    ("Who painted the Mona Lisa?", "Leonardo da Vinci painted the Mona Lisa."),
    ("What is the largest planet in our solar system?",
     "Jupiter is the largest planet in our solar system."),
    ("What is the chemical symbol for gold?", "The chemical symbol for gold is Au."),
    ("How many continents are there?",
     "There are seven continents: Africa, Antarctica, Asia, Australia (Oceania), Europe, "
     "North America and South America."),
    ("Who wrote 'Hamlet'?", "William Shakespeare wrote Hamlet."),
    ("At what temperature does water boil at sea level?",
     "At sea level water boils at 100 °C (212 °F)."),
    ("How many days are in a leap year?", "A leap year has 366 days."),
    ("What gas do plants absorb from the air?",
     "Plants absorb carbon dioxide (CO2) from the air."),
    ("Who was the first person to walk on the Moon?",
     "Neil Armstrong, on 20 July 1969, during the Apollo 11 mission."),
    ("What is the smallest prime number?", "The smallest prime number is 2."),
    ("Which ocean is the largest?", "The Pacific Ocean is the largest."),
    ("What is the freezing point of water in Fahrenheit?",
     "Water freezes at 32 °F (0 °C)."),
    ("How many sides does a hexagon have?", "A hexagon has six sides."),
    ("What is the capital of Canada?", "The capital of Canada is Ottawa."),
    ("Which language has the most native speakers?",
     "Mandarin Chinese has the most native speakers."),
    ("Who developed the theory of general relativity?",
     "Albert Einstein, who published it in 1915."),
    ("What is the hardest natural substance?", "Diamond is the hardest natural substance."),
    ("In which year did World War II end?", "World War II ended in 1945."),
    ("How fast does light travel?",
     "In a vacuum, light travels at about 299,792 kilometres per second."),
]  # fmt: skip

# ---------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------


def fmt_number(value: float) -> str:
    """A number as a user would type it (12, 27.8, 199.95)."""
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return repr(float(value))


def money(value: float) -> str:
    return f"{value:,.2f}"


def hhmm(hour: int, minute: int) -> str:
    return f"{hour:02d}:{minute:02d}"


def twelve_hour(hour: int, minute: int) -> str:
    """'7:40 am', '9 pm' (only for hours 6..11 and 13..22, so never noon or midnight)."""
    suffix = "am" if hour < 12 else "pm"
    h = hour if hour <= 12 else hour - 12
    return f"{h} {suffix}" if minute == 0 else f"{h}:{minute:02d} {suffix}"


def call_id(rng: random.Random) -> str:
    return "call_" + "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(24))


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


# ---------------------------------------------------------------------------------------------
# Requests: each returns (user text, arguments, template id); `check_surfaces` asserts that
# every argument is said in the text.
# ---------------------------------------------------------------------------------------------


class Requests:
    def __init__(
        self, rng: random.Random, eval_reminder_times: set[str], eval_pairs: set[tuple[str, str]]
    ) -> None:
        self.rng = rng
        self.eval_times = eval_reminder_times
        self.eval_pairs = eval_pairs
        self.decks: dict[str, list[int]] = {}

    def pick(self, key: str, count: int) -> int:
        """A template index: each of `count` once, in a shuffled order, before any repeats."""
        deck = self.decks.setdefault(key, [])
        if not deck:
            deck += range(count)
            self.rng.shuffle(deck)
        return deck.pop()

    def pair(self) -> tuple[str, str]:
        """Two currency codes, never a (from, to) pair of the evaluation set."""
        while True:
            src, dst = self.rng.sample(list(CURRENCIES), 2)
            if (src, dst) not in self.eval_pairs:
                return src, dst

    # -- one request per tool --

    def get_weather(self) -> tuple[str, dict[str, Any], str]:
        rng = self.rng
        city, unit = rng.choice(CITIES), rng.choice(["celsius", "celsius", "fahrenheit"])
        u = rng.choice(UNIT_WORDS[unit])
        i = self.pick("w", len(WEATHER_TEMPLATES))
        text = WEATHER_TEMPLATES[i].format(city=city, u=u)
        return text, {"city": city, "unit": unit}, f"w{i}"

    def convert_currency(self) -> tuple[str, dict[str, Any], str]:
        rng = self.rng
        src, dst = self.pair()
        amount = rng.choice(AMOUNTS)
        if src in ("JPY", "KRW") and amount < 500:
            amount = rng.choice([2500, 8000, 12000, 30000, 65000])
        i = self.pick("c", len(CURRENCY_TEMPLATES))
        template = CURRENCY_TEMPLATES[i]
        amt = fmt_number(amount)
        text = template.format(amt=amt, f=src, t=dst, fn=CURRENCIES[src][0], tn=CURRENCIES[dst][0])
        return text, {"amount": amount, "from": src, "to": dst}, f"c{i}"

    def search_docs(self) -> tuple[str, dict[str, Any], str]:
        rng = self.rng
        query = rng.choice(list(DOCS))
        n = rng.choice(MAX_RESULTS_CHOICES)
        if n == 1:
            i = self.pick("s1", len(SEARCH_TEMPLATES_ONE))
            text = SEARCH_TEMPLATES_ONE[i].format(q=query)
            return text, {"query": query, "max_results": 1}, f"s1{i}"
        i = self.pick("s", len(SEARCH_TEMPLATES))
        text = SEARCH_TEMPLATES[i].format(q=query, n=n)
        return text, {"query": query, "max_results": n}, f"s{i}"

    def _reminder_time(self) -> tuple[str, str]:
        rng = self.rng
        while True:
            if rng.random() < 0.7:
                hour, minute = rng.randrange(5, 24), rng.choice(range(0, 60, 5))
                value = hhmm(hour, minute)
                said = value
            else:
                hour = rng.choice([*range(6, 12), *range(13, 23)])
                minute = rng.choice([0, 10, 15, 20, 30, 40, 45, 50])
                value, said = hhmm(hour, minute), twelve_hour(hour, minute)
            if value not in self.eval_times:
                return value, said

    def create_reminder(self) -> tuple[str, dict[str, Any], str]:
        rng = self.rng
        text_value = rng.choice(REMINDER_TEXTS)
        time_value, said = self._reminder_time()
        i = self.pick("r", len(REMINDER_TEMPLATES))
        text = REMINDER_TEMPLATES[i].format(t=said, x=text_value)
        args = {"text": text_value, "time": time_value}
        return text, args, f"r{i}"

    def get_time(self) -> tuple[str, dict[str, Any], str]:
        rng = self.rng
        zone = rng.choice(list(TIMEZONES))
        city = TIMEZONES[zone]
        if city is not None and rng.random() < 0.45:
            i = self.pick("tc", len(TIME_TEMPLATES_CITY))
            text = TIME_TEMPLATES_CITY[i].format(w=city)
            return text, {"timezone": zone}, f"tc{i}"
        i = self.pick("tz", len(TIME_TEMPLATES_ZONE))
        text = TIME_TEMPLATES_ZONE[i].format(w=zone)
        return text, {"timezone": zone}, f"tz{i}"

    def get_stock_price(self) -> tuple[str, dict[str, Any], str]:
        rng = self.rng
        symbol = rng.choice(list(COMPANIES))
        i = self.pick("k", len(STOCK_TEMPLATES))
        text = STOCK_TEMPLATES[i].format(s=symbol, c=COMPANIES[symbol])
        return text, {"symbol": symbol}, f"k{i}"

    def send_email(self) -> tuple[str, dict[str, Any], str]:
        rng = self.rng
        to = rng.choice(RECIPIENTS)
        subject, body = rng.choice(EMAILS)
        i = self.pick("e", len(EMAIL_TEMPLATES))
        text = EMAIL_TEMPLATES[i].format(to=to, s=subject, b=body)
        args = {"to": to, "subject": subject, "body": body}
        return text, args, f"e{i}"

    def calculate_tip(self) -> tuple[str, dict[str, Any], str]:
        rng = self.rng
        cents = rng.randrange(800, 25000)
        bill_text = f"{cents // 100}.{cents % 100:02d}"
        if cents % 100 == 0 or rng.random() < 0.2:
            bill_text = str(cents // 100)
        bill = float(bill_text) if "." in bill_text else int(bill_text)
        percent = rng.choice(TIP_PERCENTS)
        i = self.pick("p", len(TIP_TEMPLATES))
        text = TIP_TEMPLATES[i].format(p=percent, bill=bill_text)
        args = {"bill": bill, "percent": percent}
        return text, args, f"p{i}"

    # -- two calls in one request (parallel) --

    def parallel(self, kind: str) -> tuple[str, list[tuple[str, dict[str, Any]]]]:
        rng = self.rng
        if kind == "weather+weather":
            c1, c2 = rng.sample(CITIES, 2)
            unit = rng.choice(["celsius", "fahrenheit"])
            u = rng.choice(UNIT_WORDS[unit])
            text = rng.choice(
                [
                    "Compare the current weather in {c1} and {c2} for me, in {u}.",
                    "I'm choosing between {c1} and {c2} for the weekend. How's the weather in "
                    "each right now ({u})?",
                    "Check {c1} and {c2} weather, {u} please.",
                ]
            ).format(c1=c1, c2=c2, u=u)
            return text, [
                ("get_weather", {"city": c1, "unit": unit}),
                ("get_weather", {"city": c2, "unit": unit}),
            ]
        if kind == "weather+time":
            city = rng.choice(CITIES)
            unit = rng.choice(["celsius", "fahrenheit"])
            u = rng.choice(UNIT_WORDS[unit])
            zone = rng.choice(list(TIMEZONES))
            text = rng.choice(
                [
                    "How's the weather in {city} in {u}, and what's the local time in {zone}?",
                    "Two things: the weather in {city} ({u}) and the current time in {zone}.",
                    "Before my trip, tell me the weather in {city} using {u}, and also the time in "
                    "{zone}.",
                ]
            ).format(city=city, u=u, zone=zone)
            return text, [
                ("get_weather", {"city": city, "unit": unit}),
                ("get_time", {"timezone": zone}),
            ]
        if kind == "currency+currency":
            (f1, t1), (f2, t2) = self.pair(), self.pair()
            a1, a2 = rng.sample([a for a in AMOUNTS if a >= 15], 2)
            text = rng.choice(
                [
                    "How much is {a1} {f1} in {t1}, and {a2} {f2} in {t2}?",
                    "Two conversions please: {a1} {f1} to {t1} and {a2} {f2} to {t2}.",
                    "I need {a1} {f1} expressed in {t1}, and {a2} {f2} in {t2}.",
                ]
            ).format(a1=fmt_number(a1), f1=f1, t1=t1, a2=fmt_number(a2), f2=f2, t2=t2)
            return text, [
                ("convert_currency", {"amount": a1, "from": f1, "to": t1}),
                ("convert_currency", {"amount": a2, "from": f2, "to": t2}),
            ]
        if kind == "stock+stock":
            s1, s2 = rng.sample(list(COMPANIES), 2)
            text = rng.choice(
                [
                    "Get me quotes for {s1} and {s2}.",
                    "How are {s1} and {s2} trading right now?",
                    "Compare the share prices of {n1} ({s1}) and {n2} ({s2}).",
                ]
            ).format(s1=s1, s2=s2, n1=COMPANIES[s1], n2=COMPANIES[s2])
            return text, [("get_stock_price", {"symbol": s1}), ("get_stock_price", {"symbol": s2})]
        if kind == "time+time":
            z1, z2 = rng.sample(list(TIMEZONES), 2)
            text = rng.choice(
                [
                    "What time is it in {z1} and in {z2}?",
                    "Tell me the current local time in both {z1} and {z2}.",
                    "I'm scheduling a call across {z1} and {z2}. What time is it in each?",
                ]
            ).format(z1=z1, z2=z2)
            return text, [("get_time", {"timezone": z1}), ("get_time", {"timezone": z2})]
        if kind == "reminder+reminder":
            x1, x2 = rng.sample(REMINDER_TEXTS, 2)
            (t1, s1), (t2, s2) = self._reminder_time(), self._reminder_time()
            while t2 == t1:
                t2, s2 = self._reminder_time()
            text = rng.choice(
                [
                    "Set two reminders: {x1} at {s1}, and {x2} at {s2}.",
                    "Remind me at {s1} to {x1} and at {s2} to {x2}.",
                    "Please add reminders to {x1} at {s1} and to {x2} at {s2}.",
                ]
            ).format(x1=x1, s1=s1, x2=x2, s2=s2)
            return text, [
                ("create_reminder", {"text": x1, "time": t1}),
                ("create_reminder", {"text": x2, "time": t2}),
            ]
        if kind == "currency+weather":
            city = rng.choice(CITIES)
            unit = rng.choice(["celsius", "fahrenheit"])
            u = rng.choice(UNIT_WORDS[unit])
            src, dst = self.pair()
            amount = rng.choice([a for a in AMOUNTS if a >= 15])
            text = rng.choice(
                [
                    "I'm heading to {city}: how much is {a} {f} in {t}, and what's the weather "
                    "there in {u}?",
                    "Quick trip check: the weather in {city} in {u}, plus {a} {f} converted "
                    "to {t}.",
                ]
            ).format(city=city, u=u, a=fmt_number(amount), f=src, t=dst)
            return text, [
                ("convert_currency", {"amount": amount, "from": src, "to": dst}),
                ("get_weather", {"city": city, "unit": unit}),
            ]
        if kind == "stock+currency":
            symbol = rng.choice(list(COMPANIES))
            dst = rng.choice(
                [c for c in CURRENCIES if c != "USD" and ("USD", c) not in self.eval_pairs]
            )
            amount = rng.choice([a for a in AMOUNTS if a >= 15])
            text = rng.choice(
                [
                    "What's {s} trading at, and how much is {a} USD in {t}?",
                    "Look up the price of {s} and convert {a} USD to {t} for me.",
                ]
            ).format(s=symbol, a=fmt_number(amount), t=dst)
            return text, [
                ("get_stock_price", {"symbol": symbol}),
                ("convert_currency", {"amount": amount, "from": "USD", "to": dst}),
            ]
        raise ValueError(kind)


PARALLEL_KINDS = [
    ("weather+weather", 5), ("weather+time", 4), ("currency+currency", 4), ("stock+stock", 4),
    ("time+time", 4), ("reminder+reminder", 4), ("currency+weather", 4), ("stock+currency", 3),
]  # fmt: skip

# ---------------------------------------------------------------------------------------------
# Tool results and the answers that use them
# ---------------------------------------------------------------------------------------------


def tool_result(
    rng: random.Random, name: str, args: dict[str, Any], utc_minutes: int
) -> dict[str, Any]:
    """A plausible result of the call (`utc_minutes`: the turn's clock, minutes after 00:00 UTC)."""
    if name == "get_weather":
        low, high = (
            (-8, 22)
            if args["city"] in COLD_CITIES
            else ((22, 38) if args["city"] in HOT_CITIES else (2, 30))
        )
        celsius = rng.randint(low, high)
        conditions = COLD_CONDITIONS if celsius <= 2 else WARM_CONDITIONS
        temp = celsius if args["unit"] == "celsius" else round(celsius * 9 / 5 + 32)
        return {
            "city": args["city"],
            "temperature": temp,
            "unit": args["unit"],
            "condition": rng.choice(conditions),
            "humidity": rng.randrange(25, 95),
        }
    if name == "convert_currency":
        rate = round(
            CURRENCIES[args["to"]][1] / CURRENCIES[args["from"]][1] * rng.uniform(0.985, 1.015), 4
        )
        result = float(Decimal(str(args["amount"] * rate)).quantize(Decimal("0.01"), ROUND_HALF_UP))
        return {
            "amount": args["amount"],
            "from": args["from"],
            "to": args["to"],
            "rate": rate,
            "result": result,
        }
    if name == "search_docs":
        pages = DOCS[args["query"]][: args["max_results"]]
        return {"results": [{"title": t, "url": u} for t, u in pages]}
    if name == "create_reminder":
        return {
            "status": "created",
            "id": f"rem_{rng.randrange(1000, 9999)}",
            "text": args["text"],
            "time": args["time"],
        }
    if name == "get_time":
        local = (utc_minutes + UTC_OFFSETS[args["timezone"]]) % (24 * 60)
        return {"timezone": args["timezone"], "time": hhmm(*divmod(local, 60))}
    if name == "get_stock_price":
        return {
            "symbol": args["symbol"],
            "price": round(PRICES[args["symbol"]] * rng.uniform(0.9, 1.1), 2),
            "currency": "USD",
            "change_percent": round(rng.uniform(-3.5, 3.5), 2),
        }
    if name == "send_email":
        return {
            "status": "sent",
            "message_id": f"msg_{rng.randrange(10**7, 10**8)}",
            "to": args["to"],
        }
    if name == "calculate_tip":
        bill = Decimal(str(args["bill"]))
        tip = (bill * args["percent"] / 100).quantize(Decimal("0.01"), ROUND_HALF_UP)
        return {
            "bill": args["bill"],
            "percent": args["percent"],
            "tip": float(tip),
            "total": float(bill + tip),
        }
    raise ValueError(name)


def answer_options(name: str, args: dict[str, Any], res: dict[str, Any]) -> list[str]:
    """Final assistant sentences that report `res` (one is used)."""
    if name == "get_weather":
        sym = "°C" if res["unit"] == "celsius" else "°F"
        t, city = f"{res['temperature']}{sym}", res["city"]
        phrase = CONDITION_PHRASES[res["condition"]]
        return [
            f"It's {t} in {city} right now, with {phrase}.",
            f"Currently {city} is at {t} with {phrase} and {res['humidity']}% humidity.",
            f"{city}: {t} and {phrase} at the moment.",
        ]
    if name == "convert_currency":
        amt, r = fmt_number(res["amount"]), money(res["result"])
        return [
            f"{amt} {res['from']} is about {r} {res['to']} at a rate of {res['rate']}.",
            f"{amt} {res['from']} comes to {r} {res['to']} "
            f"(1 {res['from']} = {res['rate']} {res['to']}).",
            f"At today's rate, {amt} {res['from']} converts to {r} {res['to']}.",
        ]
    if name == "search_docs":
        pages = res["results"]
        if len(pages) == 1:
            return [
                f'The best match for "{args["query"]}" is {pages[0]["title"]}: {pages[0]["url"]}'
            ]
        lines = "\n".join(f"{i}. {p['title']}: {p['url']}" for i, p in enumerate(pages, 1))
        return [f'Here\'s what I found for "{args["query"]}":\n{lines}']
    if name == "create_reminder":
        return [
            f'Your reminder "{res["text"]}" is set for {res["time"]}.',
            f"All set: I'll remind you at {res['time']} ({res['text']}).",
            f"Done! Reminder created for {res['time']}: {res['text']}.",
        ]
    if name == "get_time":
        return [
            f"It's {res['time']} in {res['timezone']} right now.",
            f"The local time in {res['timezone']} is {res['time']}.",
            f"Right now the clock in {res['timezone']} reads {res['time']}.",
        ]
    if name == "get_stock_price":
        chg = res["change_percent"]
        direction = "up" if chg >= 0 else "down"
        return [
            f"{res['symbol']} is trading at ${res['price']:.2f}, {direction} {abs(chg)}% today.",
            f"The latest price for {res['symbol']} is ${res['price']:.2f} ({chg:+}% on the day).",
        ]
    if name == "send_email":
        return [
            f'Done! Your email "{args["subject"]}" has been sent to {res["to"]}.',
            f'Sent. {res["to"]} will receive "{args["subject"]}" shortly.',
        ]
    if name == "calculate_tip":
        bill = money(res["bill"])
        return [
            f"A {res['percent']}% tip on ${bill} is ${money(res['tip'])}, bringing the total "
            f"to ${money(res['total'])}.",
            f"Leave ${money(res['tip'])} as the tip; you'll pay ${money(res['total'])} in all.",
        ]
    raise ValueError(name)


def answer_key(name: str, res: dict[str, Any]) -> str:
    """Text from `res` the final answer must contain (it uses the result)."""
    return {
        "get_weather": lambda: str(res["temperature"]),
        "convert_currency": lambda: money(res["result"]),
        "search_docs": lambda: res["results"][0]["url"],
        "create_reminder": lambda: res["time"],
        "get_time": lambda: res["time"],
        "get_stock_price": lambda: f"{res['price']:.2f}",
        "send_email": lambda: res["to"],
        "calculate_tip": lambda: money(res["tip"]),
    }[name]()


# ---------------------------------------------------------------------------------------------
# Arithmetic for the no-tool rows (answers computed)
# ---------------------------------------------------------------------------------------------


def arithmetic(rng: random.Random) -> tuple[str, str]:
    kind = rng.choice(["mul", "add", "sub", "div", "sqrt", "pct"])
    if kind == "mul":
        a, b = rng.randrange(6, 40), rng.randrange(3, 13)
        q = rng.choice(
            [
                "What's {a} times {b}?",
                "Multiply {a} by {b}.",
                "What is {a} × {b}?",
                "Quick math: {a} * {b}?",
            ]
        ).format(a=a, b=b)
        return q, f"{a} × {b} = {a * b}."
    if kind == "add":
        a, b = rng.randrange(100, 900), rng.randrange(100, 900)
        q = rng.choice(
            ["What is {a} plus {b}?", "Add {a} and {b}.", "What's the sum of {a} and {b}?"]
        ).format(a=a, b=b)
        return q, f"{a} + {b} = {a + b}."
    if kind == "sub":
        a, b = rng.randrange(60, 500), rng.randrange(10, 59)
        q = rng.choice(
            ["What is {a} minus {b}?", "Subtract {b} from {a}.", "How much is {a} - {b}?"]
        ).format(a=a, b=b)
        return q, f"{a} − {b} = {a - b}."
    if kind == "div":
        b, r = rng.randrange(3, 13), rng.randrange(4, 30)
        q = rng.choice(
            [
                "What is {a} divided by {b}?",
                "Divide {a} by {b}.",
                "How many times does {b} go into {a}?",
            ]
        ).format(a=b * r, b=b)
        return q, f"{b * r} ÷ {b} = {r}."
    if kind == "sqrt":
        r = rng.randrange(4, 26)
        q = rng.choice(["What is the square root of {n}?", "What's √{n}?"]).format(n=r * r)
        return q, f"The square root of {r * r} is {r}."
    a = rng.choice([10, 20, 25, 40, 50, 75])
    n = rng.randrange(2, 40) * 4
    q = rng.choice(["What's {p}% of {n}?", "Calculate {p} percent of {n}."]).format(p=a, n=n)
    value = Decimal(a * n) / 100
    return q, f"{a}% of {n} is {fmt_number(float(value))}."


# ---------------------------------------------------------------------------------------------
# Rows
# ---------------------------------------------------------------------------------------------


class Builder:
    def __init__(
        self,
        rng: random.Random,
        tools: dict[str, dict[str, Any]],
        eval_order: list[str],
        requests: Requests,
        used: set[str],
        banned: set[str],
    ) -> None:
        self.rng = rng
        self.tools = tools
        self.eval_order = eval_order
        self.requests = requests
        self.used = used  # user messages so far (lowercased)
        self.banned = banned  # evaluation prompts (lowercased)
        self.ids: set[str] = set()
        self.templates: dict[str, set[str]] = {name: set() for name in tools}

    def fresh(self, text: str) -> bool:
        key = text.strip().lower()
        if key in self.used or key in self.banned or matches_eval_template(text):
            return False
        self.used.add(key)
        return True

    def new_id(self) -> str:
        while True:
            cid = call_id(self.rng)
            if cid not in self.ids:
                self.ids.add(cid)
                return cid

    def offer(self, called: list[str]) -> list[dict[str, Any]]:
        """3 to 6 tools in a shuffled order, always including `called`."""
        rng = self.rng
        need = list(dict.fromkeys(called))
        if rng.random() < ALL_EVAL_TOOLS_SHARE:
            names = list(self.eval_order)
            extra = [n for n in need if n not in names]
            if extra or rng.random() >= 1 / 3:
                names += extra
                rng.shuffle(names)
            return [self.tools[n] for n in names]
        size = rng.randint(max(3, len(need)), 6)
        others = [n for n in self.tools if n not in need]
        names = need + rng.sample(others, size - len(need))
        rng.shuffle(names)
        return [self.tools[n] for n in names]

    def request(self, name: str) -> tuple[str, dict[str, Any]]:
        while True:
            text, args, template = getattr(self.requests, name)()
            if self.fresh(text):
                self.templates[name].add(template)
                return text, args

    def call_turn(self, calls: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
        return {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": self.new_id(),
                    "type": "function",
                    "function": {"name": name, "arguments": dumps(args)},
                }
                for name, args in calls
            ],
        }

    def results(self, turn: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
        messages, answers = [], []
        said: set[tuple[str, int]] = set()
        utc_minutes = self.rng.randrange(24 * 60)
        for call in turn["tool_calls"]:
            name = call["function"]["name"]
            args = json.loads(call["function"]["arguments"])
            res = tool_result(self.rng, name, args, utc_minutes)
            messages.append(
                {"role": "tool", "tool_call_id": call["id"], "name": name, "content": dumps(res)}
            )
            options = answer_options(name, args, res)
            fresh = [i for i in range(len(options)) if (name, i) not in said] or [0]
            index = self.rng.choice(fresh)  # two calls of one tool: two different sentences
            said.add((name, index))
            text = options[index]
            assert answer_key(name, res) in text, (name, res, text)
            answers.append(text)
        joiner = "\n\n" if any("\n" in a for a in answers) else " "
        return messages, joiner.join(answers)

    def single(self, name: str, loop: bool) -> dict[str, Any]:
        text, args = self.request(name)
        turn = self.call_turn([(name, args)])
        messages = [{"role": "user", "content": text}, turn]
        if loop:
            tool_messages, final = self.results(turn)
            messages += [*tool_messages, {"role": "assistant", "content": final}]
        return {"tools": self.offer([name]), "messages": messages}

    def parallel(self, kind: str, loop: bool) -> dict[str, Any]:
        while True:
            text, calls = self.requests.parallel(kind)
            if self.fresh(text):
                break
        turn = self.call_turn(calls)
        messages = [{"role": "user", "content": text}, turn]
        if loop:
            tool_messages, final = self.results(turn)
            messages += [*tool_messages, {"role": "assistant", "content": final}]
        return {"tools": self.offer([n for n, _ in calls]), "messages": messages}

    def no_tool(self, question: str, reply: str) -> dict[str, Any]:
        assert self.fresh(question), question
        return {
            "tools": self.offer([]),
            "messages": [
                {"role": "user", "content": question},
                {"role": "assistant", "content": reply},
            ],
        }


def quotas(total: int, names: list[str], weights: list[int]) -> list[str]:
    """`total` tool names split by weight (largest remainders), in name order."""
    scale = total / sum(weights)
    counts = [int(w * scale) for w in weights]
    order = sorted(range(len(names)), key=lambda i: (-(weights[i] * scale - counts[i]), i))
    for i in order[: total - sum(counts)]:
        counts[i] += 1
    return [n for n, c in zip(names, counts, strict=True) for _ in range(c)]


def build_rows(builder: Builder) -> list[tuple[str, dict[str, Any]]]:
    rng = builder.rng
    names = [*EVAL_TOOL_NAMES, *EXTRA_TOOL_NAMES]
    weights = [3] * len(EVAL_TOOL_NAMES) + [2] * len(EXTRA_TOOL_NAMES)
    plan: list[tuple[str, Any]] = []
    plan += [("single", n) for n in quotas(N_SINGLE, names, weights)]
    plan += [("loop", n) for n in quotas(N_LOOP, names, weights)]
    plan += [("parallel", k) for k, c in PARALLEL_KINDS for _ in range(c)]
    assert sum(1 for c, _ in plan if c == "parallel") == N_PARALLEL
    qa = list(NO_TOOL_QA)
    rng.shuffle(qa)
    n_arith = max(16, N_NO_TOOL - len(qa))
    plan += [("no_tool", pair) for pair in qa[: N_NO_TOOL - n_arith]]
    plan += [("no_tool", None)] * n_arith
    rng.shuffle(plan)

    rows: list[tuple[str, dict[str, Any]]] = []
    parallel_seen = 0
    for category, what in plan:
        if category in ("single", "loop"):
            rows.append((category, builder.single(what, loop=category == "loop")))
        elif category == "parallel":
            parallel_seen += 1
            rows.append((category, builder.parallel(what, loop=parallel_seen % 2 == 0)))
        else:
            if what is None:
                while True:
                    what = arithmetic(rng)
                    key = what[0].lower()
                    if key not in builder.used and key not in builder.banned:
                        break
            rows.append((category, builder.no_tool(*what)))
    for index in sorted(rng.sample(range(len(rows)), N_SYSTEM)):
        row = rows[index][1]
        row["messages"].insert(0, {"role": "system", "content": rng.choice(SYSTEM_PROMPTS)})
    return rows


# ---------------------------------------------------------------------------------------------
# ShareGPT fixture (LLaMA-Factory's function-calling convention)
# ---------------------------------------------------------------------------------------------


def sharegpt_rows(builder: Builder) -> list[dict[str, Any]]:
    rng = builder.rng
    plan = [
        ("loop", "get_weather"), ("loop", "convert_currency"), ("loop", "search_docs"),
        ("loop", "get_time"), ("loop", "calculate_tip"), ("loop", "get_stock_price"),
        ("call", "create_reminder"), ("call", "send_email"), ("call", "get_weather"),
        ("parallel", "time+time"), ("no_tool", None), ("no_tool", None),
    ]  # fmt: skip
    # tools column: JSON text of bare functions (LLaMA-Factory's own form) in 7 rows, of
    # OpenAI tools in 3, and a JSON list in 2 (one of each shape).
    shapes = ["text-bare"] * 7 + ["text-openai"] * 3 + ["list-bare", "list-openai"]
    rng.shuffle(shapes)
    qa = [p for p in NO_TOOL_QA if p[0].lower() not in builder.used]
    out = []
    for (category, what), shape in zip(plan, shapes, strict=True):
        if category == "no_tool":
            question, reply = rng.choice(qa)
            qa.remove((question, reply))
            assert builder.fresh(question)
            row = {
                "tools": builder.offer([]),
                "messages": [
                    {"role": "user", "content": question},
                    {"role": "assistant", "content": reply},
                ],
            }
        elif category == "parallel":
            row = builder.parallel(what, loop=True)
        else:
            row = builder.single(what, loop=category == "loop")
        out.append(to_sharegpt(row, shape))
    return out


def to_sharegpt(row: dict[str, Any], shape: str) -> dict[str, Any]:
    conversations: list[dict[str, str]] = []
    pending_results: list[str] = []
    for message in row["messages"]:
        if message["role"] == "tool":
            pending_results.append(message["content"])
            continue
        if pending_results:
            conversations.append({"from": "observation", "value": observation(pending_results)})
            pending_results = []
        if message["role"] == "user":
            conversations.append({"from": "human", "value": message["content"]})
        elif message.get("tool_calls"):
            calls = [
                {"name": c["function"]["name"], "arguments": json.loads(c["function"]["arguments"])}
                for c in message["tool_calls"]
            ]
            conversations.append(
                {"from": "function_call", "value": dumps(calls[0] if len(calls) == 1 else calls)}
            )
        else:
            conversations.append({"from": "gpt", "value": message["content"]})
    if pending_results:
        conversations.append({"from": "observation", "value": observation(pending_results)})
    bare = [t["function"] for t in row["tools"]]
    tools: Any = {
        "text-bare": lambda: dumps(bare),
        "text-openai": lambda: dumps(row["tools"]),
        "list-bare": lambda: bare,
        "list-openai": lambda: row["tools"],
    }[shape]()
    return {"conversations": conversations, "tools": tools}


def observation(results: list[str]) -> str:
    """One result as is; several as a JSON list of the results (one per call, in order)."""
    if len(results) == 1:
        return results[0]
    return dumps([json.loads(r) for r in results])


# ---------------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------------

EVAL_TEMPLATES = [
    re.compile(r"^what is the weather in .+ right now\? give me the temperature in", re.I),
    re.compile(r"^convert [\d.]+ [a-z]{3} to [a-z]{3}\.?$", re.I),
    re.compile(r"^search the python docs for '.*' and return at most", re.I),
    re.compile(r"^remind me to .+ at \d{1,2}:\d{2}\.?$", re.I),
    re.compile(r"^what time is it now in the .+ time zone\?$", re.I),
    re.compile(r"^what is the weather in .+ in (celsius|fahrenheit)\?$", re.I),
]


def matches_eval_template(text: str) -> bool:
    return any(p.search(text) for p in EVAL_TEMPLATES)


def check_instance(value: Any, schema: dict[str, Any], where: str = "$") -> str | None:
    """Why `value` breaks `schema` (the keywords in ALLOWED_SCHEMA_KEYWORDS), or None."""
    kind = schema.get("type")
    type_ok = {
        "object": lambda v: isinstance(v, dict),
        "string": lambda v: isinstance(v, str),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        None: lambda v: True,
    }[kind]
    if not type_ok(value):
        return f"{where}: expected {kind}"
    if "enum" in schema and value not in schema["enum"]:
        return f"{where}: not one of {schema['enum']}"
    if "minimum" in schema and value < schema["minimum"]:
        return f"{where}: below {schema['minimum']}"
    if "maximum" in schema and value > schema["maximum"]:
        return f"{where}: above {schema['maximum']}"
    if "pattern" in schema and not re.search(schema["pattern"], value):
        return f"{where}: does not match {schema['pattern']}"
    if kind == "object":
        for name in schema.get("required", []):
            if name not in value:
                return f"{where}: missing {name}"
        for name, item in value.items():
            if name not in schema.get("properties", {}):
                if schema.get("additionalProperties", True) is False:
                    return f"{where}: {name} is not allowed"
                continue
            reason = check_instance(item, schema["properties"][name], f"{where}.{name}")
            if reason:
                return reason
    return None


def schema_keywords(schema: dict[str, Any]) -> set[str]:
    found = set(schema)
    for sub in schema.get("properties", {}).values():
        found |= schema_keywords(sub)
    return found


def library_checker() -> Any:
    """largeforge's validator when src/ is importable (a cross-check), else None."""
    sys.path.insert(0, str(REPO_ROOT / "src"))
    try:
        from largeforge.domain.schema_check import check_instance as lib_check
    except ImportError:
        return None
    finally:
        sys.path.pop(0)
    return lib_check


def eval_facts(lines: list[str]) -> tuple[set[str], list[tuple[str, dict[str, Any]]]]:
    """The evaluation set's user texts (lowercased) and every call it expects or shows."""
    prompts: set[str] = set()
    calls: list[tuple[str, dict[str, Any]]] = []
    for line in lines[1:]:
        row = json.loads(line)
        if "prompt" in row:
            prompts.add(row["prompt"].strip().lower())
        for message in row.get("messages", []):
            if message["role"] == "user":
                prompts.add(message["content"].strip().lower())
            for call in message.get("tool_calls") or []:
                calls.append((call["function"]["name"], json.loads(call["function"]["arguments"])))
        expected = row.get("expected")
        for item in expected if isinstance(expected, list) else [expected] if expected else []:
            calls.append((item["name"], item["arguments"]))
    return prompts, calls


def check_rows(
    rows: list[tuple[str, dict[str, Any]]],
    tools: dict[str, dict[str, Any]],
    eval_first_line: str,
    eval_prompts: set[str],
    eval_calls: list[tuple[str, dict[str, Any]]],
) -> None:
    lib_check = library_checker()
    seen_users: set[str] = set()
    seen_ids: set[str] = set()
    eval_values = {
        "city": {a["city"] for n, a in eval_calls if n == "get_weather"},
        "timezone": {a["timezone"] for n, a in eval_calls if n == "get_time"},
        "text": {a["text"] for n, a in eval_calls if n == "create_reminder"},
        "time": {a["time"] for n, a in eval_calls if n == "create_reminder"},
        "query": {a["query"] for n, a in eval_calls if n == "search_docs"},
        "pair": {(a["from"], a["to"]) for n, a in eval_calls if n == "convert_currency"},
    }
    for name, tool in tools.items():
        assert not schema_keywords(tool["function"]["parameters"]) - ALLOWED_SCHEMA_KEYWORDS, name
    for name in EVAL_TOOL_NAMES:
        assert json.dumps(tools[name]) in eval_first_line, name
    for category, row in rows:
        line = dumps(row)
        offered = [t["function"]["name"] for t in row["tools"]]
        assert 3 <= len(offered) <= 6, offered
        assert len(set(offered)) == len(offered), offered
        for tool in row["tools"]:
            name = tool["function"]["name"]
            assert tool == tools[name], name
            if name in EVAL_TOOL_NAMES:  # byte-for-byte as in tools_eval.jsonl
                assert json.dumps(tool) in line, name
                assert json.dumps(tool) in eval_first_line, name
        messages = row["messages"]
        roles = [m["role"] for m in messages]
        assert roles[0] in ("system", "user"), roles
        assert roles.count("user") == 1, roles
        user = next(m["content"] for m in messages if m["role"] == "user")
        key = user.strip().lower()
        assert key not in seen_users, f"duplicate user message: {user}"
        assert key not in eval_prompts, f"evaluation prompt reused: {user}"
        assert not matches_eval_template(user), f"evaluation template: {user}"
        seen_users.add(key)
        pending: set[str] = set()
        n_calls = 0
        for message in messages:
            if message["role"] == "assistant" and message.get("tool_calls"):
                assert message["content"] is None
                pending = set()
                for call in message["tool_calls"]:
                    n_calls += 1
                    cid, fn = call["id"], call["function"]
                    assert re.fullmatch(r"call_[A-Za-z0-9]{24}", cid), cid
                    assert cid not in seen_ids, cid
                    seen_ids.add(cid)
                    pending.add(cid)
                    assert call["type"] == "function", call
                    assert fn["name"] in offered, fn["name"]
                    args = json.loads(fn["arguments"])
                    assert isinstance(args, dict), args
                    assert dumps(args) == fn["arguments"], args
                    schema = tools[fn["name"]]["function"]["parameters"]
                    reason = check_instance(args, schema)
                    assert reason is None, (fn["name"], args, reason)
                    if lib_check is not None:
                        assert lib_check(args, schema) is None, (fn["name"], args)
                    check_call_values(fn["name"], args, eval_values, eval_calls)
                    check_surfaces(fn["name"], args, user)
            elif message["role"] == "tool":
                assert message["tool_call_id"] in pending, "tool message answers no call"
                pending.discard(message["tool_call_id"])
                call_names = {
                    c["id"]: c["function"]["name"]
                    for m in messages
                    if m.get("tool_calls")
                    for c in m["tool_calls"]
                }
                assert message["name"] == call_names[message["tool_call_id"]]
                json.loads(message["content"])
            elif message["role"] == "assistant":
                assert isinstance(message["content"], str), message
                assert message["content"].strip(), message
                assert not pending, "final answer before every call was answered"
        last = messages[-1]
        expected_calls = {"single": 1, "loop": 1, "parallel": 2, "no_tool": 0}[category]
        assert n_calls == expected_calls, (category, n_calls)
        if category == "single":
            assert last.get("tool_calls"), "a single-call row ends at the call"
        if category == "loop":
            assert roles[-3:] == ["assistant", "tool", "assistant"], roles
        if category == "parallel":
            assert last.get("tool_calls") or roles[-4:] == [
                "assistant",
                "tool",
                "tool",
                "assistant",
            ], roles
        if category == "no_tool":
            assert roles[-2:] == ["user", "assistant"], roles
            assert "tool" not in roles, roles


def check_call_values(
    name: str,
    args: dict[str, Any],
    eval_values: dict[str, set[Any]],
    eval_calls: list[tuple[str, dict[str, Any]]],
) -> None:
    assert (name, args) not in eval_calls, (name, args)
    if name == "get_weather":
        assert args["city"] not in eval_values["city"], args
    if name == "get_time":
        assert args["timezone"] not in eval_values["timezone"], args
    if name == "create_reminder":
        assert args["text"] not in eval_values["text"], args
        assert args["time"] not in eval_values["time"], args
    if name == "search_docs":
        assert args["query"] not in eval_values["query"], args
    if name == "convert_currency":
        assert (args["from"], args["to"]) not in eval_values["pair"], args


def check_surfaces(name: str, args: dict[str, Any], user: str) -> None:
    """Each argument is said in the user's words (names and 12-hour times map to values)."""
    text = user.lower()
    for key, value in args.items():
        if name == "get_weather" and key == "unit":
            assert any(w.lower() in text for w in UNIT_WORDS[value]), (user, value)
        elif name == "convert_currency" and key in ("from", "to"):
            assert value.lower() in text or CURRENCIES[value][0].lower() in text, (user, value)
        elif name == "convert_currency" and key == "amount":
            assert fmt_number(value) in text, (user, value)
        elif name == "get_time":
            assert value.lower() in text or (TIMEZONES[value] or "\0").lower() in text, user
        elif name == "create_reminder" and key == "time":
            hour, minute = map(int, value.split(":"))
            assert value in text or twelve_hour(hour, minute) in text, (user, value)
        elif name == "search_docs" and key == "max_results":
            assert (
                str(value) in text
                if value > 1
                else any(w in text for w in ("one", "single", "top result"))
            ), user
        elif name == "calculate_tip" and key == "bill":
            assert re.search(rf"(?<![\d.]){re.escape(fmt_number(value))}(\.?0*)?(?![\d])", text), (
                user,
                value,
            )
        elif isinstance(value, str):
            assert value.lower() in text, (user, key, value)
        else:
            assert str(value) in text, (user, key, value)


def check_sharegpt(
    rows: list[dict[str, Any]], tools: dict[str, dict[str, Any]], eval_prompts: set[str]
) -> None:
    assert len(rows) == 12
    assert sum(isinstance(r["tools"], list) for r in rows) == 2
    assert sum(isinstance(r["tools"], str) for r in rows) == 10
    assert sum(r["conversations"][-1]["from"] == "function_call" for r in rows) >= 2
    for row in rows:
        listed = row["tools"] if isinstance(row["tools"], list) else json.loads(row["tools"])
        functions = [t.get("function", t) for t in listed]
        offered = {f["name"]: f for f in functions}
        for f in functions:
            assert f == tools[f["name"]]["function"]
        speakers = [t["from"] for t in row["conversations"]]
        for i, speaker in enumerate(speakers):  # human/observation odd, function_call/gpt even
            assert speaker in (
                ("human", "observation") if i % 2 == 0 else ("function_call", "gpt")
            ), speakers
        assert row["conversations"][0]["value"].strip().lower() not in eval_prompts
        for turn in row["conversations"]:
            if turn["from"] == "function_call":
                value = json.loads(turn["value"])
                for call in value if isinstance(value, list) else [value]:
                    assert set(call) == {"name", "arguments"}
                    schema = offered[call["name"]]["parameters"]
                    assert check_instance(call["arguments"], schema) is None, call


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


def render(rows: list[dict[str, Any]]) -> str:
    return "".join(dumps(row) + "\n" for row in rows)


def generate() -> tuple[
    str, str, list[tuple[str, dict[str, Any]]], list[dict[str, Any]], dict[str, set[str]]
]:
    lines = EVAL_PATH.read_text(encoding="utf-8").splitlines()
    eval_tools = json.loads(lines[0])["tools"]
    eval_order = [t["function"]["name"] for t in eval_tools]
    assert eval_order == list(EVAL_TOOL_NAMES), eval_order
    tools = {t["function"]["name"]: t for t in [*eval_tools, *EXTRA_TOOLS]}
    eval_prompts, eval_calls = eval_facts(lines)
    eval_times = {a["time"] for n, a in eval_calls if n == "create_reminder"}
    eval_pairs = {(a["from"], a["to"]) for n, a in eval_calls if n == "convert_currency"}

    rng = random.Random(SEED)
    used: set[str] = set()
    builder = Builder(
        rng, tools, eval_order, Requests(rng, eval_times, eval_pairs), used, eval_prompts
    )
    rows = build_rows(builder)
    check_rows(rows, tools, lines[0], eval_prompts, eval_calls)
    templates = builder.templates
    for name in tools:
        assert len(templates[name]) >= 8, (name, sorted(templates[name]))

    fixture_rng = random.Random(FIXTURE_SEED)
    fixture_builder = Builder(
        fixture_rng,
        tools,
        eval_order,
        Requests(fixture_rng, eval_times, eval_pairs),
        used,
        eval_prompts,
    )
    fixture = sharegpt_rows(fixture_builder)
    check_sharegpt(fixture, tools, eval_prompts)
    return render([r for _, r in rows]), render(fixture), rows, fixture, templates


def report(
    rows: list[tuple[str, dict[str, Any]]],
    fixture: list[dict[str, Any]],
    templates: dict[str, set[str]],
) -> None:
    categories = Counter(c for c, _ in rows)
    print(
        f"{len(rows)} rows: "
        + ", ".join(f"{c} {categories[c]}" for c in ("single", "loop", "parallel", "no_tool"))
    )
    systems = sum(r["messages"][0]["role"] == "system" for _, r in rows)
    all_eval = sum(
        {t["function"]["name"] for t in r["tools"]} >= set(EVAL_TOOL_NAMES) for _, r in rows
    )
    print(f"system message: {systems}; rows offering all five eval tools: {all_eval}")
    sizes = Counter(len(r["tools"]) for _, r in rows)
    print("tools offered per row: " + ", ".join(f"{k}: {sizes[k]}" for k in sorted(sizes)))
    calls: Counter[str] = Counter()
    for _, row in rows:
        for m in row["messages"]:
            for c in m.get("tool_calls") or []:
                calls[c["function"]["name"]] += 1
    print("calls per tool (phrasings):")
    for name, count in sorted(calls.items(), key=lambda kv: (-kv[1], kv[0])):
        print(f"  {name:18s} {count:4d}  ({len(templates[name])} templates)")
    ends = Counter(r["conversations"][-1]["from"] for r in fixture)
    print(f"sharegpt fixture: {len(fixture)} rows, last turn {dict(sorted(ends.items()))}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--check", action="store_true", help="verify the committed files instead of writing them"
    )
    options = parser.parse_args(argv)
    data, fixture_text, rows, fixture, templates = generate()
    report(rows, fixture, templates)
    outputs = [(OUTPUT_PATH, data), (FIXTURE_PATH, fixture_text)]
    if options.check:
        stale = [
            p for p, text in outputs if not p.exists() or p.read_text(encoding="utf-8") != text
        ]
        for path in stale:
            print(f"out of date: {path.relative_to(REPO_ROOT)}", file=sys.stderr)
        return 1 if stale else 0
    for path, text in outputs:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
        print(f"wrote {path.relative_to(REPO_ROOT)} ({len(text.encode('utf-8'))} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
