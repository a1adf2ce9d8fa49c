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


def redact(text: str, kinds: list[str]) -> tuple[str, Counter]:
    """Replace PII of the given kinds by placeholders; returns (text, counts by kind)."""
    counts: Counter = Counter()

    def sub(regex, kind, text, check=None):
        def repl(m):
            if check is not None and not check(m, text):
                return m.group(0)
            counts[kind] += 1
            return PLACEHOLDERS[kind]
        return regex.sub(repl, text)

    if "secret" in kinds:
        for r in SECRET_RES:
            text = sub(r, "secret", text)

        def assigned(m):
            counts["secret"] += 1
            return m.group(1) + PLACEHOLDERS["secret"] + m.group(3)
        text = ASSIGNED_SECRET_RE.sub(assigned, text)
    if "email" in kinds and "@" in text:
        text = sub(EMAIL_RE, "email", text)
    if "ip" in kinds and "." in text:
        text = sub(IPV4_RE, "ip", text, _not_version)
    if "ip" in kinds and ":" in text:
        text = sub(IPV6_RE, "ip", text)
    if "card" in kinds:
        text = sub(CARD_RE, "card", text, _card_ok)
    if "phone" in kinds:
        text = sub(PHONE_RE, "phone", text)
    return text, counts


def _not_version(m: re.Match, text: str) -> bool:
    return not VERSION_CONTEXT_RE.search(text[max(0, m.start() - 12) : m.start()])


def _card_ok(m: re.Match, text: str) -> bool:
    digits = re.sub(r"\D", "", m.group(0))
    if not 13 <= len(digits) <= 19 or len(set(digits)) < 2:
        return False
    if not (digits[0] in "3456" or "22" <= digits[:2] <= "27"):  # Amex/Visa/Mastercard/Discover/...
        return False
    return luhn_ok(digits)
