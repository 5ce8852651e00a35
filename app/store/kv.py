"""Small key/value facts (the notify switch, the catalogue's age, the AWS CLI version last seen)."""

from app.store.base import StoreBase

KV_UPSERT = ("INSERT INTO kv (key, value) VALUES (:key, :value) "
             "ON CONFLICT (key) DO UPDATE SET value = excluded.value")


class KvQueries(StoreBase):
    def kv_get(self, key: str) -> str | None:
        return self._scalar("SELECT value FROM kv WHERE key = :key", {"key": key})

    def kv_create(self, key: str, value: str) -> bool:
        """Set `key` unless it is set already (the first writer wins, on every replica); True when this call set it."""
        return self._run("INSERT INTO kv (key, value) VALUES (:key, :value) ON CONFLICT (key) DO NOTHING",
                         {"key": key, "value": value}) == 1

    def kv_delete_expired(self, prefix: str, now: str) -> None:
        """Forget the keys starting with `prefix` whose value (a stored time) is before `now`."""
        self._run("DELETE FROM kv WHERE key >= :low AND key < :high AND value < :now",
                  {"low": prefix, "high": prefix + "\uffff", "now": now})

    def kv_set(self, key: str, value: str | None) -> None:
        if value is None:
            self._run("DELETE FROM kv WHERE key = :key", {"key": key})
        else:
            self._run(KV_UPSERT, {"key": key, "value": value})
