"""Text helpers the messages of every part share: a value cut to a readable length, a count
with its noun, the names given twice, the name a typo meant, JSON read with refusals that can be shown as they
are."""

import difflib
import json
import sys
from collections import Counter


def shortened(text: str, limit: int = 60) -> str:
    """``text`` as a message shows a value sent or read: cut to ``limit`` characters, ending in
    "...", when longer (a value of 100,000 characters is not repeated whole)."""
    return text if len(text) <= limit else text[:limit - 3] + "..."


def counted(number: int, noun: str) -> str:
    """``number`` and ``noun``, plural unless it is one: "1 epoch", "3 epochs"."""
    return f"{number} {noun}{'' if number == 1 else 's'}"


def repeated(names) -> list:
    """The names that occur more than once in ``names``, sorted: what a message says is given twice."""
    return sorted(name for name, count in Counter(names).items() if count > 1)


def closest(name: str, names) -> str | None:
    """The one of ``names`` most like ``name``, the one a typo of it meant ('relux': 'relu'; 'Price': 'price',
    letter case aside), or None when none is like it."""
    by_lower = {other.lower(): other for other in sorted(names, reverse=True)}  # the first of a case-blind pair
    found = difflib.get_close_matches(name.lower(), sorted(by_lower), n=1)
    return by_lower[found[0]] if found else None


def did_you_mean(name: str, names) -> str:
    """`` (did you mean 'relu'?)``, naming the one of ``names`` a typo of ``name`` meant (``closest``), to
    follow the name in a refusal; '' when none is like it."""
    meant = closest(name, names)
    return f" (did you mean {meant!r}?)" if meant else ""


def read_json(text: str | bytes):
    """``json.loads(text)``, each refusal a ValueError whose message can be shown as it is: not
    UTF-8, not JSON, nested too deeply for the parser, or an integer too long for Python to read
    (whose own message advises a setting of the interpreter)."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("it is nested over about 1000 levels deep") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise
    except ValueError:  # Python's limit on the digits of an integer read from text
        raise ValueError(f"it holds an integer of over {sys.get_int_max_str_digits()} digits, too long to read") \
            from None
