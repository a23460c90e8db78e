"""Tokens the user gives: cleaned and checked where they enter, and kept out of messages.

How it works:
- `user_token` is the one entry of an explicit token (`--token`, `token=`) for publishing and
  reading alike: surrounding whitespace goes (as huggingface_hub does for HF_TOKEN and the saved
  login, so a token pasted with its newline or read from a CRLF file works), and a token still
  holding a character an HTTP header cannot carry is refused before any request. The HTTP
  library would refuse it too, but its error quotes the header, token included.
- `hide_token` removes a token from a message in every form a library may print it: as is,
  stripped, and escaped the way `repr` of a str or bytes shows it.
"""

from __future__ import annotations

import os
import re

from .errors import TokenError

TOKEN_HELP = "copy it again from https://huggingface.co/settings/tokens (or the server's own)"
# What an HTTP header value can carry as text: printable ASCII (httpx encodes headers as ASCII;
# control characters end or corrupt the header line).
_HEADER_SAFE = re.compile(r"[\x20-\x7e]*")


def user_token(token: str | None, source: str) -> str | None:
    """`token` without surrounding whitespace, or None when nothing is left; a `TokenError`
    naming `source` ("from --token": where it came from; never the token itself) when it
    cannot be sent in an HTTP header."""
    if token is None:
        return None
    token = token.strip()
    if not _HEADER_SAFE.fullmatch(token):
        at = next(i for i, c in enumerate(token) if not _HEADER_SAFE.fullmatch(c))
        raise TokenError(f"the token {source} holds a character an HTTP header cannot "
                         f"carry (a control character or non-ASCII, at position {at + 1} of "
                         f"{len(token)}): {TOKEN_HELP}")
    return token or None


def saved_token_source() -> str:
    """Where huggingface_hub's `get_token()` finds a token: named in messages, never the token."""
    env = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    return "HF_TOKEN" if env else "the saved login (`hf auth login`)"


def hide_token(text: str, token: str | None) -> str:
    """`text` with `token` replaced by `***` in each form it may be printed in."""
    if not token:
        return text
    forms = {token, token.strip(), repr(token)[1:-1],
             repr(token.encode("utf-8", "backslashreplace"))[2:-1]}
    for form in sorted((f for f in forms if f), key=len, reverse=True):
        text = text.replace(form, "***")
    return text
