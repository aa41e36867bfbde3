"""Prefix subscriptions: the one filter both publishers and subscribers use.

A subscription is a byte prefix; a message matches if its first frame starts
with any subscribed prefix. A subscriber's own filter counts them: two
subscribes need two unsubscribes (libzmq's trie in SUB/XSUB does the same). A
publisher's index holds each subscriber at most once per prefix, as libzmq's
mtrie does: a subscriber sends one SUBSCRIBE per subscribe call but only one
CANCEL, at its last unsubscribe, and that one cancel must end it.

Matching costs one dict lookup per distinct prefix *length*, whatever the
number of subscriptions, because every prefix of one length is in one dict.
"""

from __future__ import annotations

from collections.abc import Collection, Hashable, Iterable


class PrefixIndex:
    """Prefix -> {subscriber: count}. A subscriber is any hashable key (a pipe, or None).

    With ``counted=False`` a key holds a prefix at most once (its count stays 1):
    adding it again changes nothing, and one remove ends it.
    """

    __slots__ = ("_by_len", "_counted", "_lengths")

    def __init__(self, counted: bool = True) -> None:
        #: length -> {prefix: {subscriber: count}}
        self._by_len: dict[int, dict[bytes, dict[Hashable, int]]] = {}
        self._lengths: tuple[int, ...] = ()
        self._counted = counted

    def __bool__(self) -> bool:
        return bool(self._lengths)

    def add(self, prefix: bytes, key: Hashable = None) -> tuple[bool, bool]:
        """Count one subscription; returns (new for *key*, new for anyone).

        Uncounted, a prefix *key* already holds gives (False, False) and changes nothing.
        """
        n = len(prefix)
        table = self._by_len.get(n)
        if table is None:
            table = self._by_len[n] = {}
            self._lengths = tuple(sorted(self._by_len))
        subs = table.get(prefix)
        if subs is None:
            table[prefix] = {key: 1}
            return True, True
        count = subs.get(key, 0)
        if count and not self._counted:
            return False, False
        subs[key] = count + 1
        return count == 0, False

    def remove(self, prefix: bytes, key: Hashable = None) -> tuple[bool, bool]:
        """Uncount one subscription; returns (gone for *key*, gone for everyone).

        Removing a subscription that does not exist does nothing: (False, False)
        (uncounted, that is the only way to get it: a key's prefix goes at once).
        """
        table = self._by_len.get(len(prefix))
        subs = table.get(prefix) if table is not None else None
        if subs is None or key not in subs:
            return False, False
        count = subs[key] - 1
        if count:
            subs[key] = count
            return False, False
        del subs[key]
        if subs:
            return True, False
        self._drop_prefix(prefix)
        return True, True

    def _drop_prefix(self, prefix: bytes) -> None:
        n = len(prefix)
        table = self._by_len[n]
        del table[prefix]
        if not table:
            del self._by_len[n]
            self._lengths = tuple(sorted(self._by_len))

    def remove_key(self, key: Hashable) -> list[bytes]:
        """Forget every subscription of *key*; returns the prefixes nobody holds any more."""
        gone = []
        for table in list(self._by_len.values()):
            for prefix, subs in list(table.items()):
                if subs.pop(key, None) is not None and not subs:
                    self._drop_prefix(prefix)
                    gone.append(prefix)
        return gone

    @property
    def matches_all(self) -> bool:
        """True if the empty prefix is subscribed: every message matches."""
        return bool(self._lengths) and self._lengths[0] == 0

    def matches(self, data: bytes) -> bool:
        """True if any subscription is a prefix of *data*."""
        by_len = self._by_len
        size = len(data)
        for n in self._lengths:
            if n > size:
                return False
            if data[:n] in by_len[n]:
                return True
        return False

    def match_keys(self, data: bytes) -> Collection[Hashable]:
        """Every subscriber with a subscription that is a prefix of *data* (each once)."""
        by_len = self._by_len
        size = len(data)
        lengths = self._lengths
        if len(lengths) == 1:  # one prefix length (often just b""): one lookup, no merging
            n = lengths[0]
            subs = by_len[n].get(data[:n]) if n <= size else None
            return tuple(subs) if subs else ()
        found: set[Hashable] = set()
        for n in self._lengths:
            if n > size:
                break
            subs = by_len[n].get(data[:n])
            if subs:
                found.update(subs)
        return found

    def prefixes(self, key: Hashable = None) -> list[bytes]:
        """The prefixes *key* holds (each once, whatever its count)."""
        return [p for table in self._by_len.values() for p, subs in table.items() if key in subs]

    def all_prefixes(self) -> Iterable[bytes]:
        for table in self._by_len.values():
            yield from table
