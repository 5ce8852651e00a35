"""Queries of the budget reservations: what admitted creates and starts of every replica reserve, their
records not written yet. A reservation is one row per budget period it reaches: key "<reservation>@YYYY-MM"."""

from app.core.clock import utcnow
from app.store.base import StoreBase


class ReservationQueries(StoreBase):
    def reservations(self, now: str) -> dict[str, dict[str, float]]:
        """reservation -> USD per period ("YYYY-MM"; "" for a row of an older version, meaning the current one)."""
        held: dict[str, dict[str, float]] = {}
        for row in self._all("SELECT key, usd FROM reservations WHERE until > :now", {"now": now}):
            name, _, period = str(row["key"]).partition("@")
            held.setdefault(name, {})[period] = float(row["usd"])
        return held

    def reserved_usd(self, now: str) -> float:
        """What every replica reserves, in every period."""
        return sum(sum(amounts.values()) for amounts in self.reservations(now).values())

    def reserve(self, key: str, amounts: dict[str, float] | float, until: str) -> None:
        """Inside the admission's transaction (its caller holds the write lock)."""
        if not isinstance(amounts, dict):
            amounts = {"": float(amounts)}
        if not amounts:
            return
        self._run("INSERT INTO reservations (key, usd, until) VALUES (:key, :usd, :until) ON CONFLICT (key) DO "
                  "UPDATE SET usd = excluded.usd, until = excluded.until",
                  [{"key": f"{key}@{period}" if period else key, "usd": usd, "until": until}
                   for period, usd in amounts.items()])

    def unreserve(self, key: str) -> None:
        """Forget a reservation (each period's row), and any that expired (their replica died before it could)."""
        # "@" < "A": the keys "<key>@..." are exactly those in [key + "@", key + "A") byte-wise.
        self._run("DELETE FROM reservations WHERE key = :key OR (key >= :lo AND key < :hi) OR until <= :now",
                  {"key": key, "lo": key + "@", "hi": key + "A", "now": utcnow()})
