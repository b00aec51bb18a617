-- A create's overlap check and a device's sessions (GET) look sessions up by owner and device
-- key. With only a partial index by device key, the planner combined it with the owner index
-- (every session of the owner, dead versions included) while a young table had no statistics
-- yet: 12 ms per batch of creates at 400 creates/s instead of a few index probes.
CREATE INDEX sessions_by_owner_device ON sessions (owner, device_key);
DROP INDEX sessions_live_by_device;
