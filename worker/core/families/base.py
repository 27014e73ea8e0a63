"""What every kind of segment family is to the worker: one small interface.

A :class:`Family` places an account in its segments from the account's features, says
why it is in one, names its segments, says what of the account state it reads (so
that an event that touches none of it need not evaluate it: ``worker.core.impact``) and
when time alone may change its answer (``worker.core.schedule``). Rule families
(``families.rules``) and cluster families (``families.clusters``) are the two the worker
ships; a new kind is a new :class:`FamilyKind` beside them, and nothing else changes.

A :class:`FamilyKind` builds families from the facts shared by all accounts
(``Globals``: a cluster family needs the current model); :class:`Families` is the
ordered set of kinds the worker runs, and ``bind`` gives the families to evaluate with
the shared facts of one batch.

Examples
--------
>>> from worker.core.features import VOCABULARY, Globals
>>> from worker.core.definitions import load_definitions
>>> definitions = load_definitions('''
... version: "1"
... families:
...   program: {exclusive: true, segments: [{id: member, when: is_member}, {id: rest, when: true}]}
... ''', VOCABULARY)
>>> from worker.core.families import worker_families
>>> families = worker_families(definitions)
>>> [f.id for f in families.bind(Globals())], families.ids(Globals())
(['program'], ('program',))
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence

from worker.core.events import SegmentChanged
from worker.core.features import AccountState, FeatureView, Globals
from worker.core.membership import Context, Membership

#: Shared facts without any model: what the families that need none are bound with.
_NO_MODELS = Globals()


class Family(ABC):
    """One segment family: an independent dimension in which an account holds segments.

    ``id`` names it in memberships, member sets and events. ``model_token`` is ``None``
    for a family that the definitions describe entirely; a family that also evaluates
    with a shared model names the model (a digest that changes with it), so that an
    account's evaluation record can vouch for it (``worker.core.impact``).
    """

    id: str

    @abstractmethod
    def evaluate(
        self, current: Mapping[str, Membership], view: FeatureView, context: Context
    ) -> tuple[dict[str, Membership], list[SegmentChanged]]:
        """The account's new memberships of this family and the changes leading there."""

    @abstractmethod
    def explain(self, segment_id: str, membership: Membership, view: FeatureView) -> str:
        """Why the account is in ``segment_id`` now, from its current features."""

    @abstractmethod
    def segments(self) -> Sequence[tuple[str, str]]:
        """``(segment id, description)`` of every segment an account may hold."""

    @abstractmethod
    def inputs(self) -> frozenset[str] | None:
        """The state attributes its answer reads (``GLOBAL_INPUT``/``DAILY_INPUT`` for the
        shared facts and daily drift); None when not known: it is then always evaluated."""

    def fingerprint(self) -> str:
        """A digest of what the family is: a new one after a definitions change."""
        return hashlib.sha256(repr(self).encode()).hexdigest()[:12]

    @property
    def model_token(self) -> str | None:
        return None

    def memory_seconds(self) -> float:
        """How far back the family's answer can depend on earlier evaluations: the
        longest chain of holds (``enter_after`` + ``min_dwell`` + ``exit_grace``) of its
        segments; 0 when its answer follows from the features alone (a cluster family:
        from them and the account's cluster before, whenever that was;
        ``worker.core.backfill`` evaluates imported history over this stretch only)."""
        return 0.0

    def next_due(self, state: AccountState, view: FeatureView) -> float | None:
        """Epoch seconds of the first moment time alone may change this family's answer,
        beyond the window, role and category edges every account is swept at anyway
        (``worker.core.schedule``); None: not before those."""
        return None


class FamilyKind(ABC):
    """Builds the families of one kind from the facts shared by all accounts."""

    @abstractmethod
    def bind(self, shared: Globals) -> Sequence[Family]:
        """The families to evaluate with ``shared`` (the same objects while it stays)."""

    @abstractmethod
    def ids(self, shared: Globals) -> Sequence[str]:
        """The ids of the families of this kind, also those not ready to evaluate (a
        cluster family before its first model keeps its members)."""

    @property
    def version(self) -> str | None:
        """The version of the definitions this kind comes from, if any."""
        return None

    def fingerprint(self) -> str | None:
        """A digest of the families of this kind that need no shared model; None when
        there are none (their changes are what ``model_token`` tracks)."""
        static = [f for f in self.bind(_NO_MODELS) if f.model_token is None]
        if not static:
            return None
        text = "\x1f".join(f"{f.id}={f.fingerprint()}" for f in static)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


class Families:
    """The ordered kinds of families the worker runs: rule families first, then the rest
    (``worker.core.families.worker_families`` builds the worker's own)."""

    def __init__(self, kinds: Iterable[FamilyKind]) -> None:
        self.kinds = tuple(kinds)
        self.version = next((k.version for k in self.kinds if k.version is not None), "")
        self._bound: tuple[int, Globals, tuple[Family, ...]] | None = None

    def bind(self, shared: Globals) -> tuple[Family, ...]:
        """Every family to evaluate with ``shared``, in order (cached per ``shared``)."""
        bound = self._bound
        if bound is not None and bound[1] is shared:
            return bound[2]
        families = tuple(family for kind in self.kinds for family in kind.bind(shared))
        self._bound = (id(shared), shared, families)
        return families

    def ids(self, shared: Globals) -> tuple[str, ...]:
        """Every family id, bound or not."""
        return tuple(family_id for kind in self.kinds for family_id in kind.ids(shared))

    def static(self) -> tuple[Family, ...]:
        """The families that need no shared model (what a definitions fingerprint covers)."""
        return tuple(f for f in self.bind(_NO_MODELS) if f.model_token is None)

    def family_fingerprints(self) -> dict[str, str]:
        """A digest per family that needs no shared model: which a new version changed."""
        return {family.id: family.fingerprint() for family in self.static()}

    def fingerprint(self) -> str:
        """A short digest of all of them (not only of their declared version): the
        kinds' own digests, combined when there is more than one."""
        digests = [digest for kind in self.kinds if (digest := kind.fingerprint()) is not None]
        if len(digests) == 1:
            return digests[0]
        return hashlib.sha256("\x1f".join(digests).encode()).hexdigest()[:12]
