"""``MatchIndex``: devices kept for repeated matching, so a request reads only what it admits.

``core/matching.py``'s ``match`` is the reference: it filters and sorts every
candidate, one to two seconds at a million devices. A control plane that places
thousands of devices a second needs a request to cost what it admits, not what the
network holds, so ``MatchIndex`` keeps devices bucketed by (kind, model, location,
tier), each bucket sorted by rank, and a request visits only the buckets its filters
admit. It returns exactly what ``match`` returns over the same devices, ``Explain``
included (every count is exact): the rules stay in ``core/matching.py`` (filters,
ranking, the location rule) and this module only finds the same answer faster.
``docs/matching.md`` ("MatchIndex") describes the layout; ``tests/test_matching.py``
checks the agreement over random fleets, requests and updates.
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_left, bisect_right, insort
from collections.abc import Collection, Iterable, Iterator
from typing import NamedTuple

from idlegrid.core.matching import (
    FILTERS,
    PRICE_WEIGHT,
    STEPS,
    TIER_WEIGHT,
    Candidate,
    Explain,
    Match,
    Requirements,
    rank_key,
)

Key = tuple[float, str]  # rank_key: ascending is best first
ANY_MODEL = ""  # the model key of the index's model-blind tree
_EPS = 1e-9  # far above float error in score(), far below any weight


class _Shelf:
    """One bucket's devices: rank keys, best first, and reputations sorted for counting."""

    __slots__ = ("keys", "location", "reps", "tier")

    def __init__(self, location: str | None, tier: int) -> None:
        self.keys: list[Key] = []
        self.reps: list[float] = []
        self.location = location
        self.tier = tier


Tiers = dict[int, _Shelf]
Locations = dict[str | None, Tiers]


class _Walk(NamedTuple):
    """Counts after the kind, model, location and tier filters, and the admitted shelves."""

    kind: int
    model: int
    location: int
    tier: int
    shelves: list[_Shelf]


class _Tree:
    """Shelves nested kind → model → location → tier, with counts per kind and model.
    A model-blind tree files every device under ``ANY_MODEL``."""

    __slots__ = ("by_model", "kinds", "n_kind", "n_model")

    def __init__(self, by_model: bool = True) -> None:
        self.by_model = by_model
        self.kinds: dict[str, dict[str, Locations]] = {}
        self.n_kind: dict[str, int] = {}
        self.n_model: dict[tuple[str, str], int] = {}

    def _shelf(self, c: Candidate) -> _Shelf:
        model = c.model if self.by_model else ANY_MODEL
        tiers = self.kinds.setdefault(c.kind, {}).setdefault(model, {}).setdefault(c.location, {})
        shelf = tiers.get(c.tier)
        if shelf is None:
            shelf = tiers[c.tier] = _Shelf(c.location, c.tier)
        self.n_kind[c.kind] = self.n_kind.get(c.kind, 0) + 1
        self.n_model[c.kind, model] = self.n_model.get((c.kind, model), 0) + 1
        return shelf

    def append(self, c: Candidate, key: Key) -> None:
        """Add unsorted (bulk loading); ``sort`` must follow."""
        shelf = self._shelf(c)
        shelf.keys.append(key)
        shelf.reps.append(c.reputation)

    def insert(self, c: Candidate, key: Key) -> None:
        shelf = self._shelf(c)
        insort(shelf.keys, key)
        insort(shelf.reps, c.reputation)

    def sort(self) -> None:
        for models in self.kinds.values():
            for locations in models.values():
                for tiers in locations.values():
                    for shelf in tiers.values():
                        shelf.keys.sort()
                        shelf.reps.sort()

    def delete(self, c: Candidate, key: Key) -> bool:
        """Remove; True when the tree is empty afterwards."""
        model = c.model if self.by_model else ANY_MODEL
        models = self.kinds[c.kind]
        locations = models[model]
        tiers = locations[c.location]
        shelf = tiers[c.tier]
        del shelf.keys[bisect_left(shelf.keys, key)]
        del shelf.reps[bisect_left(shelf.reps, c.reputation)]
        # Empty containers are dropped so that walks never visit them.
        if not shelf.keys:
            del tiers[c.tier]
            if not tiers:
                del locations[c.location]
        self.n_model[c.kind, model] -= 1
        if not self.n_model[c.kind, model]:
            del self.n_model[c.kind, model], models[model]
        self.n_kind[c.kind] -= 1
        if not self.n_kind[c.kind]:
            del self.n_kind[c.kind], self.kinds[c.kind]
        return not self.kinds

    def walk(self, req: Requirements) -> _Walk:
        n_kind = n_model = n_location = n_tier = 0
        shelves: list[_Shelf] = []
        kinds = self.kinds if req.kind is None else {req.kind: self.kinds.get(req.kind, {})}
        for kind, models in kinds.items():
            n_kind += self.n_kind.get(kind, 0)
            if req.model is not None:
                models = {req.model: models[req.model]} if req.model in models else {}
            for model, locations in models.items():
                n_model += self.n_model[kind, model]
                if req.locations:
                    locations = {x: locations[x] for x in req.locations if x in locations}
                for tiers in locations.values():
                    for tier, shelf in tiers.items():
                        n = len(shelf.keys)
                        n_location += n
                        if tier >= req.min_tier:
                            n_tier += n
                            shelves.append(shelf)
        return _Walk(n_kind, n_model, n_location, n_tier, shelves)


class _Scope:
    """One set of devices (the network's, or one supplier's) in a tree by model, plus a
    model-blind tree for requests that name no model. The blind tree doubles the cost
    of an update, so a supplier gets one only from ``blind_from`` devices (and loses it
    below half that): a small supplier's tree by model is cheap to walk whole."""

    __slots__ = ("blind", "blind_from", "by_model", "size")

    def __init__(self, blind_from: int) -> None:
        self.by_model = _Tree()
        self.blind: _Tree | None = _Tree(by_model=False) if blind_from == 0 else None
        self.blind_from = blind_from
        self.size = 0

    def _trees(self) -> tuple[_Tree, ...]:
        return (self.by_model,) if self.blind is None else (self.by_model, self.blind)

    def append(self, c: Candidate, key: Key) -> None:
        for tree in self._trees():
            tree.append(c, key)
        self.size += 1

    def sort(self, devices: dict[str, Candidate]) -> None:
        self.by_model.sort()
        if self.blind is not None:
            self.blind.sort()
        else:
            self._rebalance(devices)

    def insert(self, c: Candidate, key: Key, devices: dict[str, Candidate]) -> None:
        for tree in self._trees():
            tree.insert(c, key)
        self.size += 1
        self._rebalance(devices)

    def delete(self, c: Candidate, key: Key, devices: dict[str, Candidate]) -> bool:
        """Remove; True when the scope is empty afterwards."""
        for tree in self._trees():
            tree.delete(c, key)
        self.size -= 1
        self._rebalance(devices)
        return not self.size

    def _rebalance(self, devices: dict[str, Candidate]) -> None:
        if self.blind is None and self.size >= self.blind_from:
            self.blind = _Tree(by_model=False)
            for models in self.by_model.kinds.values():
                for locations in models.values():
                    for tiers in locations.values():
                        for shelf in tiers.values():
                            for key in shelf.keys:
                                self.blind.append(devices[key[1]], key)
            self.blind.sort()
        elif self.blind is not None and self.blind_from and self.size < self.blind_from // 2:
            self.blind = None

    def walk(self, req: Requirements) -> _Walk:
        tree = self.blind if req.model is None and self.blind is not None else self.by_model
        return tree.walk(req)


SUPPLIER_BLIND_FROM = 512


class MatchIndex:
    """Candidates kept bucketed for fast matching at 1,000,000 devices.

    Shelves are keyed (kind, model, location, tier) and keep their rank keys sorted
    (``bisect``). Every device is filed in the network's trees (one by model, one
    model-blind for requests that name no model) and in its supplier's, which serve
    requests naming suppliers; the trees share one key per device. A request reads at
    most ``quantity`` keys from each of the ``quantity`` shelves per country with the
    best heads, and skips the countries that cannot beat the best total found; explain
    counts come from shelf lengths, a bisection of each shelf's sorted reputations
    and one look-up per excluded id, never from a scan of devices. Not thread-safe:
    the caller serialises access.
    """

    def __init__(self, candidates: Iterable[Candidate] = ()) -> None:
        self._devices: dict[str, Candidate] = {c.device_id: c for c in candidates}
        self._all = _Scope(blind_from=0)
        self._by_supplier: dict[str, _Scope] = {}
        for c in self._devices.values():
            key = rank_key(c)
            self._all.append(c, key)
            self._supplier(c.supplier).append(c, key)
        for scope in (self._all, *self._by_supplier.values()):
            scope.sort(self._devices)

    def _supplier(self, supplier: str) -> _Scope:
        scope = self._by_supplier.get(supplier)
        if scope is None:
            scope = self._by_supplier[supplier] = _Scope(SUPPLIER_BLIND_FROM)
        return scope

    def __len__(self) -> int:
        return len(self._devices)

    def __contains__(self, device_id: object) -> bool:
        return device_id in self._devices

    def __iter__(self) -> Iterator[Candidate]:
        return iter(self._devices.values())

    def add(self, c: Candidate) -> None:
        """Add a device, or replace the one with the same id."""
        self.remove(c.device_id)
        self._devices[c.device_id] = c
        key = rank_key(c)
        self._all.insert(c, key, self._devices)
        self._supplier(c.supplier).insert(c, key, self._devices)

    def remove(self, device_id: str) -> None:
        """Forget a device; nothing happens if it is not here."""
        c = self._devices.pop(device_id, None)
        if c is None:
            return
        key = rank_key(c)
        self._all.delete(c, key, self._devices)
        if self._by_supplier[c.supplier].delete(c, key, self._devices):
            del self._by_supplier[c.supplier]

    def take(self, req: Requirements) -> Match:
        """Match, then remove the chosen devices: they are reserved."""
        found = self.match(req)
        for c in found.devices:
            self.remove(c.device_id)
        return found

    def match(self, req: Requirements, hidden: Collection[str] = ()) -> Match:
        """What ``match(candidates, req)`` returns over this index's devices, less the
        ``hidden`` ones: as if they were not here, counts included. The caller hides
        what it cannot file by rank (a device silent past its TTL, a floor above a
        price cap, an unsandboxed device of someone else); it costs one look-up each."""
        if hidden:
            return self._match(req, {d for d in hidden if d in self._devices})
        return self._match(req, set())

    def _match(self, req: Requirements, hidden: set[str]) -> Match:
        main = self._all.walk(req)
        if req.suppliers:
            walks = [
                self._by_supplier[s].walk(req) for s in req.suppliers if s in self._by_supplier
            ]
            n_supplier = sum(w.tier for w in walks)
            shelves = [s for w in walks for s in w.shelves]
        else:
            n_supplier, shelves = main.tier, main.shelves
        # Excluded ids that every earlier filter admits: a look-up each.
        excluded: set[str] = set()
        for device_id in req.exclude:
            c = self._devices.get(device_id)
            if c is not None and all(keep(req, c) for _, keep in FILTERS[:5]):
                excluded.add(device_id)
        n_excluded = n_supplier - len(excluded)
        limit = req.max_reputation
        if limit >= 1.0:
            n_reputation = n_excluded
        else:
            over = sum(1 for d in excluded if self._devices[d].reputation > limit)
            n_reputation = sum(bisect_right(s.reps, limit) for s in shelves)
            n_reputation -= len(excluded) - over
        counts = [len(self), main.kind, main.model, main.location, main.tier]
        counts += (n_supplier, n_excluded, n_reputation)
        # A hidden device leaves every step it would have reached: step i counts the
        # devices that pass the first i filters.
        for device_id in hidden:
            c = self._devices[device_id]
            failed = (i for i, (_, keep) in enumerate(FILTERS) if not keep(req, c))
            reached = next(failed, len(FILTERS))
            for i in range(reached + 1):
                counts[i] -= 1
        explain = Explain(tuple(zip(STEPS, counts, strict=True)))
        n_reputation = counts[-1]
        excluded |= hidden

        quantity = req.quantity
        if n_reputation == 0 or (quantity is not None and n_reputation < quantity):
            return Match((), explain)
        pick = _Picker(self._devices, excluded, limit)
        if quantity is None:
            keys: list[Key] = []
            for shelf in shelves:
                keys += pick.passing(shelf, n_reputation)
            keys.sort()
        else:
            keys = pick.choose(shelves, quantity)
        return Match(tuple(self._devices[k[1]] for k in keys), explain)


class _Picker:
    """Reads the keys that pass the exclusion and reputation filters off shelves, and
    applies the location rule. Few containers live at once, so that matching at 1M
    devices does not feed the garbage collector thousands of objects per request."""

    __slots__ = ("devices", "excluded", "limit", "plain")

    def __init__(self, devices: dict[str, Candidate], excluded: set[str], limit: float) -> None:
        self.devices = devices
        self.excluded = excluded
        self.limit = limit
        self.plain = not excluded and limit >= 1.0

    def _start(self, shelf: _Shelf) -> int:
        if self.limit >= 1.0:
            return 0
        # score ≤ reputation + TIER_WEIGHT·tier + PRICE_WEIGHT, so every key ranked above
        # this bound has reputation > limit: skip them by bisection, check the rest.
        bound = self.limit + TIER_WEIGHT * shelf.tier + PRICE_WEIGHT + _EPS
        return bisect_left(shelf.keys, (-bound, ""))

    def head(self, shelf: _Shelf) -> Key | None:
        """The shelf's best key that passes."""
        keys = shelf.keys
        if self.plain:
            return keys[0]
        excluded, devices, limit = self.excluded, self.devices, self.limit
        for i in range(self._start(shelf), len(keys)):
            key = keys[i]
            if key[1] not in excluded and devices[key[1]].reputation <= limit:
                return key
        return None

    def passing(self, shelf: _Shelf, wanted: int) -> list[Key]:
        """The shelf's best ``wanted`` keys that pass."""
        keys = shelf.keys
        if self.plain:
            return keys[:wanted]
        excluded, devices, limit = self.excluded, self.devices, self.limit
        out: list[Key] = []
        for i in range(self._start(shelf), len(keys)):
            key = keys[i]
            if key[1] not in excluded and devices[key[1]].reputation <= limit:
                out.append(key)
                if len(out) == wanted:
                    break
        return out

    def choose(self, shelves: list[_Shelf], quantity: int) -> list[Key]:
        """The location rule (module docstring) for ``quantity`` devices."""
        # Per country: each shelf's best passing key, and the shelf, in parallel lists.
        heads: dict[str | None, tuple[list[Key], list[_Shelf]]] = {}
        for shelf in shelves:
            head = self.head(shelf)
            if head is None:
                continue
            entry = heads.get(shelf.location)
            if entry is None:
                entry = heads[shelf.location] = ([], [])
            entry[0].append(head)
            entry[1].append(shelf)
        if quantity > 1:
            # Countries by their best head: no country's total can exceed quantity × the
            # score of its best head, so once that bound falls below the best total found
            # no later country can win (or tie) and the search stops.
            order = sorted(
                (min(hs), location) for location, (hs, _) in heads.items() if location is not None
            )
            best: tuple[float, str, list[Key]] | None = None
            for first, location in order:
                if best is not None and quantity * -first[0] < best[0]:
                    break
                top = self._top(*heads[location], quantity)
                if len(top) == quantity:
                    total = math.fsum(-k[0] for k in top)
                    if best is None or (-total, location) < (-best[0], best[1]):
                        best = (total, location, top)
            if best is not None:
                return best[2]
        every = (
            [h for hs, _ in heads.values() for h in hs],
            [s for _, ss in heads.values() for s in ss],
        )
        return self._top(*every, quantity)

    def _top(self, heads: list[Key], shelves: list[_Shelf], n: int) -> list[Key]:
        """The best ``n`` passing keys of these shelves. Only the ``n`` shelves with the
        best heads can contribute: any other shelf's head has ``n`` better keys ahead."""
        if len(shelves) > n:
            chosen = heapq.nsmallest(n, range(len(heads)), key=heads.__getitem__)
            shelves = [shelves[i] for i in chosen]
        keys: list[Key] = []
        for shelf in shelves:
            keys += self.passing(shelf, n)
        keys.sort()
        return keys[:n]
