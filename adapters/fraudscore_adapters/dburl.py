"""Database URLs checked before anything connects, in words that never repeat the URL.

libpq reads a URL's user-info up to its first ``@`` or ``/``, so a password holding a raw
``@`` turns its tail into the host name (``postgresql://app:p@ss@db/x`` connects to host
``ss@db``), and a raw ``/`` turns it into the database name. psycopg and its pool then print
that host or database name in their errors and, from a background thread and again on every
retry, in their warnings. Every other reader of the URL (urllib, yoyo, a log redactor) ends
the authority at the first ``/``, ``?`` or ``#``, as RFC 3986 does: the readings differ
exactly when the user-info holds one of those characters unencoded.

:func:`url_problem` finds such a URL, and the other malformed ones libpq would complain about
(quoting the offending part, which may be the password), before any connection is tried. Its
answer names the rule broken, never a character of the URL: the caller prefixes the name of
the setting. Only ``postgresql://`` URLs pass: the migrations (yoyo) need a URL, so a libpq
keyword/value string is refused with a message saying so.

Standard library only: :mod:`fraudscore_adapters.settings` uses it and must not load psycopg.
"""

from __future__ import annotations

import difflib
import re
from urllib.parse import unquote, urlsplit

__all__ = ["CONNECTION_PARAMETERS", "URL_PREFIXES", "url_problem"]

URL_PREFIXES = ("postgresql://", "postgres://")
"""What libpq takes for a URL (case-sensitive, as libpq compares them)."""

CONNECTION_PARAMETERS = frozenset(
    {
        "application_name", "channel_binding", "client_encoding", "connect_timeout", "dbname",
        "fallback_application_name", "gssdelegation", "gssencmode", "gsslib", "host",
        "hostaddr", "keepalives", "keepalives_count", "keepalives_idle", "keepalives_interval",
        "krbsrvname", "load_balance_hosts", "max_protocol_version", "min_protocol_version",
        "oauth_client_id", "oauth_client_secret", "oauth_issuer", "oauth_scope", "options",
        "passfile", "password", "port", "replication", "require_auth", "requirepeer",
        "scram_client_key", "scram_server_key", "service", "ssl", "ssl_max_protocol_version",
        "ssl_min_protocol_version", "sslcert", "sslcertmode", "sslcompression", "sslcrl",
        "sslcrldir", "sslkey", "sslkeylogfile", "sslmode", "sslnegotiation", "sslpassword",
        "sslrootcert", "sslsni", "target_session_attrs", "tcp_user_timeout", "user",
    }
)  # fmt: skip
"""The query parameters libpq 18 accepts in a URL (its connection keywords, plus ``ssl``)."""

ENCODE_HINT = "percent-encode @ / ? # in the user name and password, e.g. @ as %40"
_SPACE_OR_CONTROL = re.compile(r"[\s\x00-\x1f\x7f]")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_HOST = re.compile(r"[A-Za-z0-9._~%-]+")
_IPV6 = re.compile(r"\[[0-9A-Fa-f:.]+(?:%25[A-Za-z0-9._~-]+)?\]")
_MAX_PORT = 65_535


def url_problem(url: str) -> str | None:
    """What is wrong with the database URL ``url``, or None if libpq and every other reader
    will read it alike. The answer reads after the setting's name ("DATABASE_URL has ...")
    and contains no character of ``url``."""
    if not url.startswith(URL_PREFIXES):
        return _not_a_url(url)
    rest = url.partition("://")[2]
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    path_and_query = rest[len(authority) :]
    if problem := _text_problem(url, authority, path_and_query) or _split_problem(url):
        return problem
    query = path_and_query.partition("?")[2]
    return _hosts_problem(authority.rpartition("@")[2], query) or _query_problem(query)


def _not_a_url(url: str) -> str:
    """Why a string that does not start with ``postgresql://`` is refused."""
    if "=" in url and "://" not in url:
        return (
            "looks like a libpq keyword/value string (host=... dbname=...); give a URL"
            " instead, e.g. postgresql://user:password@host:5432/dbname (migrations need one)"
        )
    return "is not a PostgreSQL URL: start it with postgresql:// (lower case) or postgres://"


def _text_problem(url: str, authority: str, path_and_query: str) -> str | None:
    """Characters that make libpq and RFC 3986 readers disagree, or that libpq refuses."""
    if authority.count("@") > 1 or "@" in path_and_query:
        return (
            "has a raw @, /, ? or # in its user name or password (or an @ after the host):"
            f" {ENCODE_HINT}"
        )
    if "#" in url:
        return "has a raw # (libpq has no fragments): percent-encode it as %23"
    if _SPACE_OR_CONTROL.search(url):
        return "has a space or control character: percent-encode it (a space as %20)"
    if _BAD_ESCAPE.search(url):
        return "has a % not followed by two hex digits: percent-encode a % itself as %25"
    if "%00" in url:
        return "has %00 (a zero byte), which libpq refuses"
    return None


def _split_problem(url: str) -> str | None:
    """Whatever urllib cannot split (an unbalanced ``[`` or ``]`` among them)."""
    try:
        urlsplit(url)
    except ValueError:
        return f"cannot be split as a URL (an unbalanced [ or ] in the host?): {ENCODE_HINT}"
    return None


def _hosts_problem(hosts: str, query: str) -> str | None:
    """A host list (``host[:port]``, comma-separated) libpq would misread or refuse."""
    if not hosts:
        named_in_query = re.search(r"(?:^|&)(?:host|hostaddr)=", query)
        return None if named_in_query else "names no host: e.g. postgresql://user@host:5432/db"
    for entry in hosts.split(","):
        if problem := _host_problem(entry):
            return problem
    return None


def _host_problem(entry: str) -> str | None:
    """One ``host[:port]`` of the host list (an IPv6 address in brackets)."""
    if ipv6 := _IPV6.match(entry):
        host, port = ipv6.group(), entry[ipv6.end() :].removeprefix(":")
    else:
        host, _, port = entry.partition(":")
    if not host:
        return "has an empty host in its host list"
    if not ipv6 and not _HOST.fullmatch(host):
        return "has a host name with characters no host name holds (an IPv6 address goes in [])"
    if port and not (port.isascii() and port.isdigit() and 0 < int(port) <= _MAX_PORT):
        return "has a port that is not a number from 1 to 65535"
    return None


def _query_problem(query: str) -> str | None:
    """A query parameter libpq does not know (it would quote the name back)."""
    for piece in filter(None, query.split("&")):
        name, sep, _ = piece.partition("=")
        if not sep:
            return "has a query parameter without = (e.g. ?sslmode=require)"
        if unquote(name) not in CONNECTION_PARAMETERS:
            close = difflib.get_close_matches(unquote(name), CONNECTION_PARAMETERS, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            return f"has a query parameter libpq does not know{hint}"
    return None
