"""PII redaction: e-mail addresses, IP addresses, phone numbers, payment-card numbers
(Luhn-checked) and API keys/secrets, each replaced by a typed placeholder such as
``<EMAIL>``; the counts per type go to the data card.

Each pattern is written to miss its look-alikes: version strings that look like IPs
("version 1.2.3.4", "10.0.0.256"), dotted dates, numbers that fail the Luhn check, long
digit runs that are not phone-shaped.
"""
from __future__ import annotations

import re
from collections import Counter

EMAIL_RE = re.compile(r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@(?:[A-Za-z0-9-]{1,63}\.)+[A-Za-z]{2,24}\b")
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
IPV4_RE = re.compile(rf"(?<![\w.])(?:{_OCTET}\.){{3}}{_OCTET}(?![\w]|\.\d)")
IPV6_RE = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}(?![\w:])")
VERSION_CONTEXT_RE = re.compile(r"\b(?:version|release|v|ver\.?|python|build)\s*$", re.I)
# Phone-shaped: (212) 555-1234, 212-555-1234, 212.555.1234, +44 20 7946 0958; space-only
# groupings need a country code, since "384 768 1536" is usually just numbers.
PHONE_RE = re.compile(
    r"(?<![\w+.-])(?:(?:\+\d{1,3}[\s.-]?)?\(\d{3}\)[\s.-]?\d{3}[\s.-]\d{4}"
    r"|(?:\+\d{1,3}[\s.-]?)?\d{3}([.-])\d{3}\1\d{4}"
    r"|\+\d{1,3}\s\d{2,4}\s\d{3,4}\s\d{3,4})(?![\w-]|\.\d)")
# Card-shaped: 4-4-4-4(-1..3) or Amex 4-6-5 with one separator kind, or a bare 13-19 digit run;
# then a card-network prefix and the Luhn check.
CARD_RE = re.compile(r"(?<![\w-])(?:\d{4}([ -])\d{4}\1\d{4}\1\d{4}(?:\1\d{1,3})?|\d{4}([ -])\d{6}\2\d{5}|\d{13,19})(?![\w-])")
SECRET_RES = [
    re.compile(r"\bAKIA[0-9A-Z]{16}\b"),  # AWS access key id
    re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}\b"),  # GitHub tokens
    re.compile(r"\bgithub_pat_[A-Za-z0-9_]{50,}\b"),
    re.compile(r"\bxox[abpors]-[A-Za-z0-9-]{10,}\b"),  # Slack
    re.compile(r"\bsk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}\b"),  # OpenAI / Anthropic style
    re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b"),  # Google API key
    re.compile(r"\b(?:sk|pk|rk)_live_[0-9A-Za-z]{16,}\b"),  # Stripe
    re.compile(r"-----BEGIN (?:RSA |EC |OPENSSH |DSA |PGP )?PRIVATE KEY(?: BLOCK)?-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY(?: BLOCK)?-----"),
]
# key = "value" assignments whose name says secret; only the value is replaced.
ASSIGNED_SECRET_RE = re.compile(
    r"""((?:api[_-]?key|secret[_-]?key|access[_-]?token|auth[_-]?token|client[_-]?secret|password|passwd)["']?\s*[:=]\s*["'])"""
    r"""([A-Za-z0-9/+_\-.=]{16,})(["'])""", re.I)

PLACEHOLDERS = {"email": "<EMAIL>", "ip": "<IP_ADDRESS>", "phone": "<PHONE>", "card": "<CARD_NUMBER>", "secret": "<SECRET>"}


def luhn_ok(digits: str) -> bool:
    total, parity = 0, len(digits) % 2
    for i, ch in enumerate(digits):
        d = ord(ch) - 48
        if i % 2 == parity:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


# Literal substrings that each secret pattern needs: a C-speed `in` test skips the regex
# scan (about 40 MB/s each) for the vast majority of documents.
SECRET_HINTS = [("AKIA",), ("ghp_", "gho_", "ghu_", "ghs_", "ghr_"), ("github_pat_",), ("xox",), ("sk-",), ("AIza",),
                ("_live_",), ("PRIVATE KEY",)]
ASSIGNED_HINTS = ("api_key", "api-key", "apikey", "secret_key", "secret-key", "secretkey", "access_token", "access-token",
                  "accesstoken", "auth_token", "auth-token", "authtoken", "client_secret", "client-secret",
                  "clientsecret", "password", "passwd")
# Every IP, card or phone number is a run of digits and separators of at least 7 characters:
# one scan finds those runs, and the precise patterns run on the runs only.
IPV6_HINT_RE = re.compile(r":[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}:")  # starts with a literal: a fast scan
NUMERIC_RUN_RE = re.compile(r"[\d(+][\d .()+-]{5,}\d")


def redact(text: str, kinds: list[str]) -> tuple[str, Counter]:
    """Replace PII of the given kinds by placeholders; returns (text, counts by kind)."""
    counts: Counter = Counter()

    def sub(regex, kind, text, check=None, offset=0, full=None):
        def repl(m):
            if check is not None and not check(m, full if full is not None else text, offset):
                return m.group(0)
            counts[kind] += 1
            return PLACEHOLDERS[kind]
        return regex.sub(repl, text)

    if "secret" in kinds:
        for hints, r in zip(SECRET_HINTS, SECRET_RES):
            if any(h in text for h in hints):
                text = sub(r, "secret", text)
        low = text.lower() if ("=" in text or ":" in text) else ""
        if any(h in low for h in ASSIGNED_HINTS):
            def assigned(m):
                counts["secret"] += 1
                return m.group(1) + PLACEHOLDERS["secret"] + m.group(3)
            text = ASSIGNED_SECRET_RE.sub(assigned, text)
    if "email" in kinds and "@" in text:
        text = sub(EMAIL_RE, "email", text)
    if "ip" in kinds and text.count(":") >= 7 and IPV6_HINT_RE.search(text):
        text = sub(IPV6_RE, "ip", text)
    numeric = [k for k in ("ip", "card", "phone") if k in kinds]
    if not numeric:
        return text, counts
    pieces, last = [], 0
    for m in NUMERIC_RUN_RE.finditer(text):
        # the run plus one character of context each side, for the patterns' boundary checks
        a, b = max(last, m.start() - 1), min(len(text), m.end() + 1)
        seg = text[a:b]
        if "ip" in numeric and "." in seg:
            seg = sub(IPV4_RE, "ip", seg, _not_version, a, text)
        if "card" in numeric:
            seg = sub(CARD_RE, "card", seg, _card_ok)
        if "phone" in numeric:
            seg = sub(PHONE_RE, "phone", seg)
        pieces += [text[last:a], seg]
        last = b
    if not pieces:
        return text, counts
    pieces.append(text[last:])
    return "".join(pieces), counts


def _not_version(m: re.Match, full: str, offset: int) -> bool:
    start = offset + m.start()
    return not VERSION_CONTEXT_RE.search(full[max(0, start - 12) : start])


def _card_ok(m: re.Match, text: str, offset: int = 0) -> bool:
    digits = re.sub(r"\D", "", m.group(0))
    if not 13 <= len(digits) <= 19 or len(set(digits)) < 2:
        return False
    if not (digits[0] in "3456" or "22" <= digits[:2] <= "27"):  # Amex/Visa/Mastercard/Discover/...
        return False
    return luhn_ok(digits)
